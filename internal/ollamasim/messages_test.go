package ollamasim_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// anthropicErrorBody matches an Anthropic error as Ollama writes it: the
// type of the status, the message, a fresh request_id, and a trailing
// newline when the error came from the native handler (json.Encoder)
// rather than from the middleware itself (gin's c.JSON).
func anthropicErrorBody(typ, msg string, newline bool) *regexp.Regexp {
	b, _ := json.Marshal(msg)
	nl := ""
	if newline {
		nl = "\n"
	}
	return regexp.MustCompile(`^` + regexp.QuoteMeta(`{"type":"error","error":{"type":"`+typ+`","message":`+string(b)+`},"request_id":"req_`) + `[0-9a-f]{24}"\}` + nl + `$`)
}

// TestMessagesErrors holds /v1/messages errors to what real Ollama 0.32.15
// answered (curl, tiny GGUF model), e.g. for an unknown model
//
//	404 application/json
//	{"type":"error","error":{"type":"not_found_error","message":"model 'nope' not found"},"request_id":"req_9bdc5927d7ac4630c4d1a220"}
//
// and, streamed, the same with Cache-Control: no-cache and Connection:
// keep-alive left from the stream's headers.
func TestMessagesErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(mediaConfig()))
	const user = `"messages":[{"role":"user","content":"hi"}]`
	const multimodal = `{"error":{"code":400,"message":"Multimodal data provided, but model does not support multimodal requests.","type":"invalid_request_error"}}`
	tests := []struct {
		name            string
		body            string
		wantStatus      int
		wantContentType string
		wantType, want  string
		wantNewline     bool
		wantStreamHdrs  bool
	}{
		// Raised by the middleware: gin's c.JSON.
		{"empty body", ``, 400, jsonUTF8, "invalid_request_error", "EOF", false, false},
		{"bad json", `{`, 400, jsonUTF8, "invalid_request_error", "unexpected EOF", false, false},
		{"no model", `{"max_tokens":5,` + user + `}`, 400, jsonUTF8, "invalid_request_error", "model is required", false, false},
		{"no max_tokens", `{"model":"llama3.2"}`, 400, jsonUTF8, "invalid_request_error", "max_tokens is required and must be positive", false, false},
		{"no messages", `{"model":"llama3.2","max_tokens":5}`, 400, jsonUTF8, "invalid_request_error", "messages is required", false, false},
		{"image url", `{"model":"llama3.2","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"http://x"}}]}]}`, 400, jsonUTF8,
			"invalid_request_error", "invalid image source type: url. Only base64 images are supported.", false, false},
		{"tool_use without id", `{"model":"llama3.2","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}]}`, 400, jsonUTF8,
			"invalid_request_error", "tool_use block missing required 'id' field", false, false},
		{"bad tool schema", `{"model":"llama3.2","max_tokens":5,"tools":[{"name":"f","input_schema":[1]}],` + user + `}`, 400, jsonUTF8,
			"invalid_request_error", `invalid input_schema for tool "f": json: cannot unmarshal array into Go value of type api.ToolFunctionParameters`, false, false},

		// Forwarded from the native chat: json.Encoder, plain application/json.
		{"unknown model", `{"model":"nope","max_tokens":5,` + user + `}`, 404, "application/json", "not_found_error", "model 'nope' not found", true, false},
		{"unknown model streaming", `{"model":"nope","max_tokens":5,"stream":true,` + user + `}`, 404, "application/json", "not_found_error", "model 'nope' not found", true, true},
		{"invalid model", `{"model":"a b","max_tokens":5,` + user + `}`, 400, "application/json", "invalid_request_error", "invalid model name", true, false},
		{"embedding model", `{"model":"nomic-embed-text","max_tokens":5,` + user + `}`, 400, "application/json", "invalid_request_error", `"nomic-embed-text" does not support chat`, true, false},
		{"image on text model", `{"model":"llama3.2","max_tokens":3,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"aGVsbG8="}}]}]}`, 400, "application/json",
			"invalid_request_error", multimodal, true, false},
		{"image on text model streaming", `{"model":"llama3.2","max_tokens":3,"stream":true,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"aGVsbG8="}}]}]}`, 400, "application/json",
			"invalid_request_error", multimodal, true, true},
		{"tools without capability", `{"model":"qwen3:8b","max_tokens":5,"tools":[{"name":"f"}],` + user + `}`, 400, "application/json", "invalid_request_error", "registry.ollama.ai/library/qwen3:8b does not support tools", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, "POST", "/v1/messages", tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType {
				t.Errorf("got %d %q, want %d %q", r.status, r.contentType, tt.wantStatus, tt.wantContentType)
			}
			if want := anthropicErrorBody(tt.wantType, tt.want, tt.wantNewline); !want.MatchString(r.body) {
				t.Errorf("body %q\nwant %s", r.body, want)
			}
			if got := r.header.Get("Cache-Control") == "no-cache" && r.header.Get("Connection") == "keep-alive"; got != tt.wantStreamHdrs {
				t.Errorf("stream headers %v (Cache-Control %q), want %v", got, r.header.Get("Cache-Control"), tt.wantStreamHdrs)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		r := do(t, base, "GET", "/v1/messages", "")
		if r.status != 405 || r.header.Get("Allow") != "POST" || r.body != "405 method not allowed" {
			t.Errorf("got %d Allow %q %q, want 405 Allow POST", r.status, r.header.Get("Allow"), r.body)
		}
	})
}

// namedSSE is one named server-sent event.
type namedSSE struct{ event, data string }

// namedEvents splits an SSE body of "event: X\ndata: Y\n\n" events, and
// checks that each data object's type is its event name.
func namedEvents(t *testing.T, body string) []namedSSE {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("SSE body does not end with a blank line: %q", body)
	}
	var out []namedSSE
	for ev := range strings.SplitSeq(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		head, data, ok := strings.Cut(ev, "\n")
		name, ok1 := strings.CutPrefix(head, "event: ")
		data, ok2 := strings.CutPrefix(data, "data: ")
		if !ok || !ok1 || !ok2 || strings.Contains(data, "\n") {
			t.Fatalf("SSE event %q is not an event line and a data line", ev)
		}
		var typed struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(data), &typed); err != nil || typed.Type != name {
			t.Fatalf("event %s has data %s, want an object of that type", name, data)
		}
		out = append(out, namedSSE{name, data})
	}
	return out
}

func eventNames(evs []namedSSE) string {
	var names []string
	for _, e := range evs {
		names = append(names, e.event)
	}
	return strings.Join(names, " ")
}

const getWeather = `{"name":"get_weather","description":"Weather in a city","input_schema":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}`

// nativeFor is the native chat a Messages body becomes, by Ollama's own
// conversion, answered by the simulator with stream:false.
func nativeFor(t *testing.T, c *api.Client, body string) api.ChatResponse {
	t.Helper()
	var req anthropic.MessagesRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	chat, err := anthropic.FromMessagesRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if chat.Think != nil && chat.Think.Bool() && chat.Model == "llama3.2" {
		chat.Think = nil // as the middleware relaxes it for a model that cannot think
	}
	return nativeChat(t, c, *chat)
}

// TestMessages checks non-streamed answers: anthropic.ToMessagesResponse of
// the native chat's answer, as real Ollama 0.32.15 answered
//
//	{"id":"msg_e51f434e5767afc546041a5d","type":"message","role":"assistant","model":"tiny","content":[{"type":"text","text":"sKM  +"}],"stop_reason":"max_tokens","usage":{"input_tokens":20,"output_tokens":5}}
func TestMessages(t *testing.T) {
	_, c := start(t, ollamasim.New(mediaConfig()))
	base, _ := start(t, ollamasim.New(mediaConfig()))
	tests := []struct {
		name       string
		body       string
		wantBlocks string // content block types
		wantStop   string
	}{
		{"text", `{"model":"llama3.2","max_tokens":6,"messages":[{"role":"user","content":"Hello there"}]}`, "text", "max_tokens"},
		{"system and blocks", `{"model":"llama3.2","max_tokens":6,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":[{"type":"text","text":"Hello "},{"type":"text","text":"there"}]}]}`, "text", "max_tokens"},
		{"stop sequence", `{"model":"llama3.2","max_tokens":30,"stop_sequences":["e"],"messages":[{"role":"user","content":"Hello there"}]}`, "text", "end_turn"},
		{"thinking", `{"model":"qwen3:8b","max_tokens":9,"messages":[{"role":"user","content":"Hello there"}]}`, "thinking text", "max_tokens"},
		{"thinking disabled", `{"model":"qwen3:8b","max_tokens":9,"thinking":{"type":"disabled"},"messages":[{"role":"user","content":"Hello there"}]}`, "text", "max_tokens"},
		{"thinking effort", `{"model":"qwen3:8b","max_tokens":9,"output_config":{"effort":"max"},"messages":[{"role":"user","content":"Hello there"}]}`, "thinking text", "max_tokens"},
		// Claude Code asks every model to think; Ollama then lets a model
		// that cannot think answer without (real Ollama: 200, text only).
		{"thinking on plain model", `{"model":"llama3.2","max_tokens":4,"thinking":{"type":"enabled","budget_tokens":100},"messages":[{"role":"user","content":"Hello there"}]}`, "text", "max_tokens"},
		{"tools", `{"model":"llama3.2","max_tokens":20,"tools":[` + getWeather + `],"messages":[{"role":"user","content":"Weather in Paris?"}]}`, "tool_use", "tool_use"},
		{"tool result", `{"model":"llama3.2","max_tokens":5,"tools":[` + getWeather + `],"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"sunny"}]}]}`, "text", "max_tokens"},
		{"image", `{"model":"llava","max_tokens":4,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"aGVsbG8="}},{"type":"text","text":"What is it?"}]}]}`, "text", "max_tokens"},
	}
	msgID := regexp.MustCompile(`^msg_[0-9a-f]{24}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeFor(t, c, tt.body)
			r := do(t, base, "POST", "/v1/messages", tt.body)
			if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
				t.Fatalf("got %d %q %q, want 200 application/json with a trailing newline", r.status, r.contentType, r.body)
			}
			got := decodeJSON[anthropic.MessagesResponse](t, r.body)
			if !msgID.MatchString(got.ID) || got.Type != "message" || got.Role != "assistant" || got.Model != want.Model {
				t.Errorf("envelope %q %q %q %q, want msg_<24 hex> message assistant %s", got.ID, got.Type, got.Role, got.Model, want.Model)
			}
			var types []string
			var text, thinking string
			for _, b := range got.Content {
				types = append(types, b.Type)
				switch b.Type {
				case "text":
					text += *b.Text
				case "thinking":
					thinking += *b.Thinking
				case "tool_use":
					if len(want.Message.ToolCalls) != 1 || b.ID != want.Message.ToolCalls[0].ID || b.Name != "get_weather" || b.Input.String() != want.Message.ToolCalls[0].Function.Arguments.String() {
						t.Errorf("tool_use %+v, want the native call %+v", b, want.Message.ToolCalls)
					}
				}
			}
			if strings.Join(types, " ") != tt.wantBlocks || text != want.Message.Content || thinking != want.Message.Thinking {
				t.Errorf("blocks %v %q / %q, want %s with the native %q / %q", types, thinking, text, tt.wantBlocks, want.Message.Thinking, want.Message.Content)
			}
			if got.StopReason != tt.wantStop {
				t.Errorf("stop_reason = %q, want %q", got.StopReason, tt.wantStop)
			}
			if got.Usage.InputTokens != want.PromptEvalCount || got.Usage.OutputTokens != want.EvalCount {
				t.Errorf("usage %+v, want the native counts %d and %d", got.Usage, want.PromptEvalCount, want.EvalCount)
			}
		})
	}
}

// TestMessagesStream checks streamed answers: anthropic.StreamConverter's
// events in "event:"/"data:" form, as real Ollama 0.32.15 streamed
//
//	message_start, content_block_start (text), content_block_delta (text_delta)...,
//	content_block_stop, message_delta (stop_reason, usage), message_stop
//
// and, for its thinking model, a thinking block (thinking_delta) first.
func TestMessagesStream(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name       string
		body       string
		wantEvents string
		wantStop   string
	}{
		{"text", `{"model":"llama3.2","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"Hello there"}]}`,
			"message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop", "max_tokens"},
		{"thinking", `{"model":"qwen3:8b","max_tokens":6,"stream":true,"messages":[{"role":"user","content":"Hello there"}]}`,
			"message_start content_block_start content_block_delta content_block_delta content_block_stop content_block_start content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop", "max_tokens"},
		{"tools", `{"model":"llama3.2","max_tokens":5,"stream":true,"tools":[` + getWeather + `],"messages":[{"role":"user","content":"Weather in Paris?"}]}`,
			"message_start content_block_start content_block_delta content_block_stop message_delta message_stop", "tool_use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeFor(t, c, tt.body)
			r := do(t, base, "POST", "/v1/messages", tt.body)
			if r.status != 200 || r.contentType != "text/event-stream" || r.header.Get("Cache-Control") != "no-cache" || r.header.Get("Connection") != "keep-alive" {
				t.Fatalf("got %d %q %v, want 200 text/event-stream with Cache-Control no-cache and Connection keep-alive", r.status, r.contentType, r.header)
			}
			evs := namedEvents(t, r.body)
			if got := eventNames(evs); got != tt.wantEvents {
				t.Fatalf("events %s\nwant   %s", got, tt.wantEvents)
			}
			var text, thinking, args string
			for _, e := range evs {
				switch e.event {
				case "message_start":
					m := decodeJSON[anthropic.MessageStartEvent](t, e.data)
					if m.Message.Model != want.Model || len(m.Message.Content) != 0 || m.Message.Usage.InputTokens == 0 {
						t.Errorf("message_start %s, want the model, no content and the estimated input tokens", e.data)
					}
				case "content_block_delta":
					d := decodeJSON[anthropic.ContentBlockDeltaEvent](t, e.data).Delta
					text += d.Text
					thinking += d.Thinking
					args += d.PartialJSON
				case "message_delta":
					d := decodeJSON[anthropic.MessageDeltaEvent](t, e.data)
					if d.Delta.StopReason != tt.wantStop || d.Usage.InputTokens != want.PromptEvalCount || d.Usage.OutputTokens != want.EvalCount {
						t.Errorf("message_delta %s, want %s and the native counts %d/%d", e.data, tt.wantStop, want.PromptEvalCount, want.EvalCount)
					}
				}
			}
			if text != want.Message.Content || thinking != want.Message.Thinking {
				t.Errorf("streamed %q / %q, want the native %q / %q", thinking, text, want.Message.Thinking, want.Message.Content)
			}
			if len(want.Message.ToolCalls) > 0 && args != want.Message.ToolCalls[0].Function.Arguments.String() {
				t.Errorf("input_json_delta %q, want the native arguments %s", args, want.Message.ToolCalls[0].Function.Arguments.String())
			}
		})
	}
}

// TestMessagesMidStreamError checks a runner that dies mid-stream: the
// native {"error": ...} line decodes as an empty chat response and makes no
// event, so the stream stops without content_block_stop or message_stop.
func TestMessagesMidStreamError(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	base, _ := start(t, sim)
	sim.SetFailure(ollamasim.Failure{AfterTokens: 2, Message: "runner died"})
	r := do(t, base, "POST", "/v1/messages", `{"model":"llama3.2","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if r.status != 200 {
		t.Fatalf("status %d, want 200", r.status)
	}
	if got := eventNames(namedEvents(t, r.body)); got != "message_start content_block_start content_block_delta content_block_delta" {
		t.Errorf("events %s, want the two deltas and nothing after", got)
	}
	r = do(t, base, "POST", "/v1/messages", `{"model":"llama3.2","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if want := anthropicErrorBody("api_error", "runner died", true); r.status != 500 || !want.MatchString(r.body) {
		t.Errorf("stream:false got %d %q, want 500 %s", r.status, r.body, want)
	}
	sim.SetFailure(ollamasim.Failure{Status: 503, Message: "busy"})
	r = do(t, base, "POST", "/v1/messages", `{"model":"llama3.2","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if want := anthropicErrorBody("overloaded_error", "busy", true); r.status != 503 || r.contentType != "application/json" || !want.MatchString(r.body) {
		t.Errorf("early failure got %d %q %q, want 503 application/json %s", r.status, r.contentType, r.body, want)
	}
}
