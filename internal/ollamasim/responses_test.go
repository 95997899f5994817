package ollamasim_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// TestResponsesErrors holds /v1/responses errors to what real Ollama
// 0.32.15 answered (curl, tiny GGUF model), e.g. for an unknown model
//
//	404 application/json
//	{"error":{"message":"model 'nope' not found","type":"not_found_error","param":null,"code":null}}
func TestResponsesErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name            string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string
		wantStreamHdrs  bool
	}{
		// Raised by the middleware: gin's c.JSON.
		{"empty body", ``, 400, jsonUTF8, requestError("EOF"), false},
		{"bad input item", `{"model":"llama3.2","input":[{"type":"bogus"}]}`, 400, jsonUTF8, requestError(`input[0]: unknown input item type: "bogus"`), false},
		{"item without type", `{"model":"llama3.2","input":[{"content":"x"}]}`, 400, jsonUTF8, requestError(`input[0]: input item missing required 'type' field`), false},
		{"bad reasoning", `{"model":"qwen3:8b","input":"hi","reasoning":{"effort":"nah"}}`, 400, jsonUTF8,
			requestError(`invalid reasoning value: "nah" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")`), false},
		{"file input", `{"model":"llama3.2","input":[{"role":"user","content":[{"type":"input_file","file_data":"x"}]}]}`, 400, jsonUTF8, requestError("file inputs are not currently supported"), false},
		{"bad call arguments", `{"model":"llama3.2","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{"}]}`, 400, jsonUTF8,
			requestError("failed to parse function call arguments: unexpected end of JSON input"), false},

		// Forwarded from the native chat: json.Encoder, plain application/json.
		{"unknown model", `{"model":"nope","input":"hi"}`, 404, "application/json", compatError(404, "model 'nope' not found"), false},
		{"unknown model streaming", `{"model":"nope","input":"hi","stream":true}`, 404, "application/json", compatError(404, "model 'nope' not found"), true},
		{"no model", `{"input":"hi"}`, 400, "application/json", compatError(400, "model is required"), false},
		{"max effort on plain model", `{"model":"llama3.2","input":"hi","reasoning":{"effort":"max"}}`, 400, "application/json", compatError(400, `"llama3.2" does not support thinking`), false},
		{"tools without capability", `{"model":"qwen3:8b","input":"hi","tools":[{"type":"function","name":"f"}]}`, 400, "application/json", compatError(400, "registry.ollama.ai/library/qwen3:8b does not support tools"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, "POST", "/v1/responses", tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType || r.body != tt.wantBody {
				t.Errorf("got %d %q %q\nwant %d %q %q", r.status, r.contentType, r.body, tt.wantStatus, tt.wantContentType, tt.wantBody)
			}
			if got := r.header.Get("Cache-Control") == "no-cache" && r.header.Get("Connection") == "keep-alive"; got != tt.wantStreamHdrs {
				t.Errorf("stream headers %v, want %v", got, tt.wantStreamHdrs)
			}
		})
	}
}

const weatherFunction = `{"type":"function","name":"get_weather","description":"Weather in a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}`

// nativeForResponses is the native chat a Responses body becomes, by
// Ollama's own conversion, answered with stream:false.
func nativeForResponses(t *testing.T, c *api.Client, body string) api.ChatResponse {
	t.Helper()
	var req openai.ResponsesRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	chat, err := openai.FromResponsesRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	return nativeChat(t, c, *chat)
}

// TestResponses checks non-streamed answers, openai.ToResponse of the
// native answer, as real Ollama 0.32.15 answered
//
//	{"id":"resp_642196","object":"response","created_at":1796137469,"completed_at":1796137469,"status":"completed",...,
//	 "output":[{"id":"msg_452920","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"sKM","annotations":[],"logprobs":[]}]}],
//	 ...,"usage":{"input_tokens":20,"output_tokens":3,"total_tokens":23,...},"max_output_tokens":3,...,"store":false,...}
//
// previous_response_id is ignored (real Ollama: 200), since it stores nothing.
func TestResponses(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name      string
		body      string
		wantItems string // output item types
	}{
		{"text", `{"model":"llama3.2","input":"Hello there","max_output_tokens":5}`, "message"},
		{"default length", `{"model":"llama3.2","input":"Hello there"}`, "message"},
		{"instructions and items", `{"model":"llama3.2","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Hello there"}]}],"temperature":0.2}`, "message"},
		{"previous response ignored", `{"model":"llama3.2","input":"Hello there","previous_response_id":"resp_1"}`, "message"},
		{"reasoning", `{"model":"qwen3:8b","input":"Hello there","reasoning":{"effort":"max","summary":"auto"}}`, "reasoning message"},
		{"reasoning none", `{"model":"qwen3:8b","input":"Hello there","reasoning":{"effort":"none"}}`, "message"},
		{"tools", `{"model":"llama3.2","input":"Weather in Paris?","tools":[` + weatherFunction + `]}`, "function_call"},
		{"tool output", `{"model":"llama3.2","tools":[` + weatherFunction + `],"input":[{"role":"user","content":"Weather?"},{"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},{"type":"function_call_output","call_id":"c1","output":"sunny"}]}`, "message"},
	}
	respID, itemID := regexp.MustCompile(`^resp_\d{1,6}$`), regexp.MustCompile(`^msg_\d{1,6}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeForResponses(t, c, tt.body)
			var req openai.ResponsesRequest
			if err := json.Unmarshal([]byte(tt.body), &req); err != nil {
				t.Fatal(err)
			}
			r := do(t, base, "POST", "/v1/responses", tt.body)
			if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
				t.Fatalf("got %d %q %q, want 200 application/json with a trailing newline", r.status, r.contentType, r.body)
			}
			got := decodeJSON[openai.ResponsesResponse](t, r.body)
			if !respID.MatchString(got.ID) || got.Object != "response" || got.Status != "completed" || got.Model != req.Model || got.CompletedAt == nil || *got.CompletedAt < got.CreatedAt || got.Store {
				t.Errorf("envelope %s, want resp_N, response, completed, the model, completed_at, store false", r.body)
			}
			// The rest is the openai package's own conversion of the native answer.
			wantResp := openai.ToResponse(req.Model, got.ID, "", want, req)
			var types []string
			for i, item := range got.Output {
				types = append(types, item.Type)
				if item.Type == "message" && !itemID.MatchString(item.ID) {
					t.Errorf("message id %q, want msg_N", item.ID)
				}
				w := wantResp.Output[i]
				if item.Type != "message" && item.ID != w.ID {
					t.Errorf("output[%d] id %q, want %q", i, item.ID, w.ID)
				}
				item.ID, w.ID = "", ""
				if g, _ := json.Marshal(item); string(g) != string(must(json.Marshal(w))) {
					t.Errorf("output[%d] = %s\nwant        %s", i, g, must(json.Marshal(w)))
				}
			}
			if strings.Join(types, " ") != tt.wantItems {
				t.Errorf("output items %v, want %s", types, tt.wantItems)
			}
			if *got.Usage != *wantResp.Usage || got.Temperature != wantResp.Temperature || got.TopP != wantResp.TopP || !strings.Contains(r.body, `"previous_response_id":null`) {
				t.Errorf("usage and echoed fields %s, want usage %+v", r.body, *wantResp.Usage)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestResponsesStream checks streamed answers: the openai package's
// ResponsesStreamConverter events, each with a sequence_number from 0, as
// real Ollama 0.32.15 streamed
//
//	response.created, response.in_progress, response.output_item.added,
//	response.content_part.added, response.output_text.delta...,
//	response.output_text.done, response.content_part.done,
//	response.output_item.done, response.completed
func TestResponsesStream(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name       string
		body       string
		wantEvents string
	}{
		{"text", `{"model":"llama3.2","input":"Hello there","max_output_tokens":3,"stream":true}`,
			"created in_progress output_item.added content_part.added output_text.delta output_text.delta output_text.delta output_text.done content_part.done output_item.done completed"},
		{"reasoning", `{"model":"qwen3:8b","input":"Hello there","max_output_tokens":4,"stream":true}`,
			"created in_progress output_item.added reasoning_summary_text.delta reasoning_summary_text.done output_item.done output_item.added content_part.added output_text.delta output_text.delta output_text.delta output_text.done content_part.done output_item.done completed"},
		{"tools", `{"model":"llama3.2","input":"Weather in Paris?","stream":true,"tools":[` + weatherFunction + `]}`,
			"created in_progress output_item.added function_call_arguments.delta function_call_arguments.done output_item.done completed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeForResponses(t, c, tt.body)
			r := do(t, base, "POST", "/v1/responses", tt.body)
			if r.status != 200 || r.contentType != "text/event-stream" || r.header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("got %d %q %v, want 200 text/event-stream", r.status, r.contentType, r.header)
			}
			evs := namedEvents(t, r.body)
			var names []string
			var text, reasoning, args string
			for i, e := range evs {
				names = append(names, strings.TrimPrefix(e.event, "response."))
				var d struct {
					Seq      int                      `json:"sequence_number"`
					Delta    string                   `json:"delta"`
					Response openai.ResponsesResponse `json:"response"`
				}
				if err := json.Unmarshal([]byte(e.data), &d); err != nil || d.Seq != i {
					t.Errorf("event %d %s: sequence_number %d (%v), want %d", i, e.data, d.Seq, err, i)
				}
				switch e.event {
				case "response.output_text.delta":
					text += d.Delta
				case "response.reasoning_summary_text.delta":
					reasoning += d.Delta
				case "response.function_call_arguments.delta":
					args += d.Delta
				case "response.completed":
					u := d.Response.Usage
					if d.Response.Status != "completed" || u == nil || u.InputTokens != want.PromptEvalCount || u.OutputTokens != want.EvalCount || u.TotalTokens != want.PromptEvalCount+want.EvalCount {
						t.Errorf("response.completed %s, want the native counts %d/%d", e.data, want.PromptEvalCount, want.EvalCount)
					}
				}
			}
			if got := strings.Join(names, " "); got != tt.wantEvents {
				t.Fatalf("events %s\nwant   %s", got, tt.wantEvents)
			}
			if text != want.Message.Content || reasoning != want.Message.Thinking {
				t.Errorf("streamed %q / %q, want the native %q / %q", reasoning, text, want.Message.Thinking, want.Message.Content)
			}
			if len(want.Message.ToolCalls) > 0 && args != want.Message.ToolCalls[0].Function.Arguments.String() {
				t.Errorf("arguments %q, want %s", args, want.Message.ToolCalls[0].Function.Arguments.String())
			}
		})
	}
}

// TestResponsesMidStreamError: the native {"error": ...} line makes no
// event, so the stream stops without response.completed, as in Ollama.
func TestResponsesMidStreamError(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	base, _ := start(t, sim)
	sim.SetFailure(ollamasim.Failure{AfterTokens: 2, Message: "runner died"})
	r := do(t, base, "POST", "/v1/responses", `{"model":"llama3.2","input":"hi","stream":true}`)
	var names []string
	for _, e := range namedEvents(t, r.body) {
		names = append(names, e.event)
	}
	if got := strings.Join(names, " "); r.status != 200 || got != "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta" {
		t.Errorf("status %d, events %s; want 200 and the stream cut after two deltas", r.status, got)
	}
	r = do(t, base, "POST", "/v1/responses", `{"model":"llama3.2","input":"hi"}`)
	if r.status != 500 || r.body != compatError(500, "runner died") {
		t.Errorf("stream:false got %d %q, want 500 %q", r.status, r.body, compatError(500, "runner died"))
	}
}
