package ollamasim_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// compatError is the exact body of an OpenAI error as Ollama's middleware
// encodes it when the native handler failed with status: since 0.32 the
// type follows the status (invalid_request_error for 400, not_found_error
// for 404, api_error for the rest), and there is a trailing newline.
func compatError(status int, msg string) string {
	b, _ := json.Marshal(msg)
	typ := "api_error"
	switch status {
	case 400:
		typ = "invalid_request_error"
	case 404:
		typ = "not_found_error"
	}
	return `{"error":{"message":` + string(b) + `,"type":"` + typ + `","param":null,"code":null}}` + "\n"
}

// requestError is the body of an error the middleware raises itself:
// invalid_request_error, no trailing newline.
func requestError(msg string) string {
	b, _ := json.Marshal(msg)
	return `{"error":{"message":` + string(b) + `,"type":"invalid_request_error","param":null,"code":null}}`
}

// sseEvents splits an SSE body into its data payloads and reports whether
// it ended with [DONE]. Anything but "data: <payload>\n\n" events fails.
func sseEvents(t *testing.T, body string) (payloads []string, done bool) {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("SSE body does not end with a blank line: %q", body)
	}
	for ev := range strings.SplitSeq(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		payload, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(payload, "\n") {
			t.Fatalf("SSE event %q is not a single data line", ev)
		}
		if done {
			t.Fatalf("event %q after [DONE]", ev)
		}
		if payload == "[DONE]" {
			done = true
			continue
		}
		payloads = append(payloads, payload)
	}
	return payloads, done
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

// nativeChat is the stream:false answer of /api/chat, for comparison.
func nativeChat(t *testing.T, c *api.Client, req api.ChatRequest) api.ChatResponse {
	t.Helper()
	req.Stream = ptr(false)
	var out api.ChatResponse
	if err := c.Chat(t.Context(), &req, func(r api.ChatResponse) error { out = r; return nil }); err != nil {
		t.Fatalf("chat: %v", err)
	}
	return out
}

var (
	chatID       = regexp.MustCompile(`^chatcmpl-\d{1,3}$`)
	completionID = regexp.MustCompile(`^cmpl-\d{1,3}$`)
)

func TestOpenAIErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	const user = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name            string
		method, path    string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string
		wantAllow       string
		header          string // "Name: value" to send
	}{
		// Raised by the middleware: 400 invalid_request_error, gin's c.JSON.
		{name: "chat empty body", method: "POST", path: "/v1/chat/completions", wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("EOF")},
		{name: "chat bad json", method: "POST", path: "/v1/chat/completions", body: `{`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("unexpected EOF")},
		{name: "chat wrong type", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2",` + user + `,"temperature":"hot"}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64")},
		{name: "chat no messages", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("[] is too short - 'messages'")},
		{name: "chat bad reasoning effort", method: "POST", path: "/v1/chat/completions", body: `{"model":"qwen3:8b",` + user + `,"reasoning_effort":"bogus"}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError(`invalid reasoning value: "bogus" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")`)},
		{name: "chat bad reasoning", method: "POST", path: "/v1/chat/completions", body: `{"model":"qwen3:8b",` + user + `,"reasoning":{"effort":"nah"}}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError(`invalid reasoning value: "nah" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")`)},
		{name: "chat image url", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("image URLs are not currently supported, please use base64 encoded data instead")},
		{name: "chat bad image", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":[{"type":"image_url","image_url":"data:image/gif;base64,AAAA"}]}]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("invalid image input")},
		{name: "chat bad tool arguments", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{"}}]}]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("invalid tool call arguments")},
		{name: "chat null content", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":null}]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("invalid message content type: <nil>")},
		{name: "completions prompt array", method: "POST", path: "/v1/completions", body: `{"model":"llama3.2","prompt":["a"]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string")},
		{name: "completions bad stop", method: "POST", path: "/v1/completions", body: `{"model":"llama3.2","prompt":"a","stop":["x",1]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("invalid type for 'stop' field: float64")},
		{name: "embeddings bad encoding", method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":"a","encoding_format":"hex"}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].")},
		{name: "embeddings no input", method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("invalid input")},
		{name: "embeddings empty list", method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":[]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("invalid input")},

		// Forwarded from the native handler: its status, always api_error,
		// plain application/json and a trailing newline.
		{name: "chat unknown model", method: "POST", path: "/v1/chat/completions", body: `{"model":"nope",` + user + `}`, wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'nope' not found")},
		{name: "chat streaming unknown model", method: "POST", path: "/v1/chat/completions", body: `{"model":"nope","stream":true,` + user + `}`, wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'nope' not found")},
		{name: "chat no model", method: "POST", path: "/v1/chat/completions", body: `{` + user + `}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, "model is required")},
		{name: "chat invalid model", method: "POST", path: "/v1/chat/completions", body: `{"model":"a b",` + user + `}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, "invalid model name")},
		{name: "chat max effort on plain model", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2",` + user + `,"reasoning_effort":"max"}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, `"llama3.2" does not support thinking`)},
		{name: "chat on embedding model", method: "POST", path: "/v1/chat/completions", body: `{"model":"nomic-embed-text",` + user + `}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, `"nomic-embed-text" does not support chat`)},
		{name: "chat reasoning on plain model", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2",` + user + `,"reasoning":{"effort":"low"}}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, `"llama3.2" does not support thinking`)},
		{name: "chat bad format", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2",` + user + `,"response_format":{"type":"json_schema","json_schema":{"schema":"x"}}}`, wantStatus: 500, wantContentType: "application/json",
			wantBody: compatError(500, `invalid format: "\"x\""; expected "json" or a valid JSON Schema object`)},
		{name: "completions unknown model", method: "POST", path: "/v1/completions", body: `{"model":"nope","prompt":"a"}`, wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'nope' not found")},
		{name: "completions suffix without insert", method: "POST", path: "/v1/completions", body: `{"model":"qwen3:8b","prompt":"a","suffix":"b"}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, "registry.ollama.ai/library/qwen3:8b does not support insert")},
		{name: "embeddings unknown model", method: "POST", path: "/v1/embeddings", body: `{"model":"nope","input":"a"}`, wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, `model "nope" not found, try pulling it first`)},
		{name: "embeddings number input", method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":3}`, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, "invalid input type")},
		{name: "embeddings on chat model", method: "POST", path: "/v1/embeddings", body: `{"model":"llama3.2","input":"a"}`, wantStatus: 501, wantContentType: "application/json", wantBody: compatError(501, "This server does not support embeddings. Start it with `--embeddings`")},
		{name: "retrieve unknown model", method: "GET", path: "/v1/models/nope", wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'nope:latest' not found")},
		{name: "retrieve unknown tag of a model", method: "GET", path: "/v1/models/LLAMA3.2:foo", wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'llama3.2:foo' not found")},

		// Raised by the cloud passthrough in front of the POST routes: native errors.
		{name: "chat bad zstd", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2"}`, header: "Content-Encoding: zstd", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input: magic number mismatch"}`},
		{name: "responses bad zstd", method: "POST", path: "/v1/responses", body: `notzstd`, header: "Content-Encoding: zstd", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input: magic number mismatch"}`},

		// Routing, as gin does it.
		{name: "chat wrong method", method: "GET", path: "/v1/chat/completions", wantStatus: 405, wantContentType: "text/plain", wantBody: "405 method not allowed", wantAllow: "POST"},
		{name: "models wrong method", method: "POST", path: "/v1/models", wantStatus: 405, wantContentType: "text/plain", wantBody: "405 method not allowed", wantAllow: "GET"},
		{name: "model wrong method", method: "DELETE", path: "/v1/models/llama3.2", wantStatus: 405, wantContentType: "text/plain", wantBody: "405 method not allowed", wantAllow: "GET"},
		{name: "model with a namespace", method: "GET", path: "/v1/models/user/m", wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "model trailing slash", method: "GET", path: "/v1/models/llama3.2/", wantStatus: 301},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header []string
			if tt.header != "" {
				header = strings.SplitN(tt.header, ": ", 2)
			}
			r := do(t, base, tt.method, tt.path, tt.body, header...)
			if r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %q)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantContentType != "" && r.contentType != tt.wantContentType {
				t.Errorf("content type = %q, want %q", r.contentType, tt.wantContentType)
			}
			if tt.wantBody != "" && r.body != tt.wantBody {
				t.Errorf("body = %q\nwant   %q", r.body, tt.wantBody)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestOpenAIChat(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	msgs := []api.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello there"}}
	const weather = `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}}]`
	tests := []struct {
		name          string
		body          string
		native        api.ChatRequest // the same request on /api/chat
		wantReason    string
		wantReasoning bool
		wantTools     bool
	}{
		{"text", `{"model":"llama3.2","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs}, "stop", false, false},
		{"max_tokens", `{"model":"llama3.2","max_tokens":5,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs, Options: map[string]any{"num_predict": 5}}, "length", false, false},
		{"content parts", `{"model":"llama3.2","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello there"}]}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs}, "stop", false, false},
		{"reasoning", `{"model":"qwen3:8b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "qwen3:8b", Messages: msgs}, "stop", true, false},
		{"reasoning none", `{"model":"qwen3:8b","reasoning_effort":"none","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Think: &api.ThinkValue{Value: false}}, "stop", false, false},
		// 0.32 accepts max (and xhigh, ultra, minimal), and any level on a thinking model.
		{"reasoning max", `{"model":"qwen3:8b","reasoning_effort":"xhigh","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Think: &api.ThinkValue{Value: "max"}}, "stop", true, false},
		{"reasoning minimal", `{"model":"qwen3:8b","reasoning":{"effort":"minimal"},"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Think: &api.ThinkValue{Value: "low"}}, "stop", true, false},
		{"tools", `{"model":"llama3.2","tools":` + weather + `,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs, Tools: decodeJSON[api.Tools](t, weather)}, "tool_calls", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeChat(t, c, tt.native)
			r := do(t, base, "POST", "/v1/chat/completions", tt.body)
			if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
				t.Fatalf("status %d, content type %q, body %q; want 200 application/json with a trailing newline", r.status, r.contentType, r.body)
			}
			got := decodeJSON[openai.ChatCompletion](t, r.body)
			if !chatID.MatchString(got.Id) || got.Object != "chat.completion" || got.SystemFingerprint != "fp_ollama" || got.Model != tt.native.Model || got.Created == 0 {
				t.Errorf("envelope = %q %q %q %q %d, want chatcmpl-N chat.completion fp_ollama %s", got.Id, got.Object, got.SystemFingerprint, got.Model, got.Created, tt.native.Model)
			}
			if len(got.Choices) != 1 {
				t.Fatalf("choices = %d, want 1", len(got.Choices))
			}
			ch := got.Choices[0]
			if ch.FinishReason == nil || *ch.FinishReason != tt.wantReason {
				t.Errorf("finish_reason = %v, want %q", ch.FinishReason, tt.wantReason)
			}
			if ch.Message.Role != "assistant" || ch.Message.Content != want.Message.Content || ch.Message.Reasoning != want.Message.Thinking {
				t.Errorf("message = %+v, want the native answer %q / %q", ch.Message, want.Message.Content, want.Message.Thinking)
			}
			if got := ch.Message.Reasoning != ""; got != tt.wantReasoning {
				t.Errorf("reasoning present = %v, want %v", got, tt.wantReasoning)
			}
			if tt.wantTools {
				if len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Type != "function" || ch.Message.ToolCalls[0].ID != want.Message.ToolCalls[0].ID {
					t.Fatalf("tool_calls = %+v, want one function call %s", ch.Message.ToolCalls, want.Message.ToolCalls[0].ID)
				}
				if args := ch.Message.ToolCalls[0].Function.Arguments; args != want.Message.ToolCalls[0].Function.Arguments.String() {
					t.Errorf("arguments = %s, want the JSON string %s", args, want.Message.ToolCalls[0].Function.Arguments.String())
				}
			} else if strings.Contains(r.body, "tool_calls\":[") {
				t.Errorf("body has tool_calls: %s", r.body)
			}
			wantUsage := openai.Usage{PromptTokens: want.PromptEvalCount, CompletionTokens: want.EvalCount, TotalTokens: want.PromptEvalCount + want.EvalCount}
			if got.Usage != wantUsage {
				t.Errorf("usage = %+v, want %+v", got.Usage, wantUsage)
			}
		})
	}
}

func TestOpenAIChatStream(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	const weather = `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}}]`
	msgs := []api.Message{{Role: "user", Content: "Hello there"}}
	tests := []struct {
		name       string
		body       string
		native     api.ChatRequest
		wantUsage  bool
		wantReason string
	}{
		{"text", `{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs}, false, "stop"},
		{"include_usage", `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs}, true, "stop"},
		{"usage off", `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs}, false, "stop"},
		{"length", `{"model":"llama3.2","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs, Options: map[string]any{"num_predict": 3}}, false, "length"},
		{"reasoning", `{"model":"qwen3:8b","stream":true,"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "qwen3:8b", Messages: msgs}, false, "stop"},
		{"tools", `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"tools":` + weather + `,"messages":[{"role":"user","content":"Hello there"}]}`,
			api.ChatRequest{Model: "llama3.2", Messages: msgs, Tools: decodeJSON[api.Tools](t, weather)}, true, "tool_calls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := nativeChat(t, c, tt.native)
			r := do(t, base, "POST", "/v1/chat/completions", tt.body)
			if r.status != 200 || r.contentType != "text/event-stream" {
				t.Fatalf("status %d, content type %q; want 200 text/event-stream", r.status, r.contentType)
			}
			payloads, done := sseEvents(t, r.body)
			if !done {
				t.Fatalf("stream did not end with [DONE]: %q", r.body)
			}
			var chunks []openai.ChatCompletionChunk
			for _, p := range payloads {
				chunks = append(chunks, decodeJSON[openai.ChatCompletionChunk](t, p))
			}
			if tt.wantUsage {
				last := chunks[len(chunks)-1]
				wantUsage := openai.Usage{PromptTokens: want.PromptEvalCount, CompletionTokens: want.EvalCount, TotalTokens: want.PromptEvalCount + want.EvalCount}
				if last.Usage == nil || *last.Usage != wantUsage || last.Choices == nil || len(last.Choices) != 0 {
					t.Errorf("usage chunk = %s, want \"choices\":[] and usage %+v", payloads[len(payloads)-1], wantUsage)
				}
				if !strings.Contains(payloads[len(payloads)-1], `"choices":[],`) {
					t.Errorf("usage chunk %s: want \"choices\":[]", payloads[len(payloads)-1])
				}
				chunks = chunks[:len(chunks)-1]
			} else if strings.Contains(r.body, `"usage"`) {
				t.Errorf("usage present without include_usage: %s", r.body)
			}
			var content, reasoning strings.Builder
			var calls []openai.ToolCall
			id := chunks[0].Id
			for i, ch := range chunks {
				if ch.Id != id || !chatID.MatchString(ch.Id) || ch.Object != "chat.completion.chunk" || ch.SystemFingerprint != "fp_ollama" || ch.Model != tt.native.Model || ch.Usage != nil {
					t.Errorf("chunk %d envelope = %s", i, payloads[i])
				}
				if len(ch.Choices) != 1 {
					t.Fatalf("chunk %d = %s, want one choice", i, payloads[i])
				}
				d := ch.Choices[0]
				// Ollama 0.32's ChatWriter: the role in the first chunk
				// only, and the finish reason in a chunk of its own with an
				// empty delta, as real Ollama 0.32.15 streamed them.
				if got := d.Delta.Role; (i == 0) != (got == "assistant") {
					t.Errorf("chunk %d role = %q, want assistant in the first chunk only", i, got)
				}
				if c, ok := d.Delta.Content.(string); ok {
					content.WriteString(c)
				}
				reasoning.WriteString(d.Delta.Reasoning)
				calls = append(calls, d.Delta.ToolCalls...)
				last := i == len(chunks)-1
				if last && (d.FinishReason == nil || *d.FinishReason != tt.wantReason || !strings.Contains(payloads[i], `"delta":{},"finish_reason":`)) {
					t.Errorf("last chunk = %s, want an empty delta and finish_reason %q", payloads[i], tt.wantReason)
				}
				if !last && (d.FinishReason != nil || !strings.Contains(payloads[i], `"finish_reason":null`)) {
					t.Errorf("chunk %d finish_reason = %v, want null", i, d.FinishReason)
				}
			}
			if content.String() != want.Message.Content || reasoning.String() != want.Message.Thinking {
				t.Errorf("streamed %q / %q, want the native %q / %q", content.String(), reasoning.String(), want.Message.Content, want.Message.Thinking)
			}
			if len(calls) != len(want.Message.ToolCalls) {
				t.Fatalf("tool calls = %d, want %d", len(calls), len(want.Message.ToolCalls))
			}
			for i, call := range calls {
				if call.ID != want.Message.ToolCalls[i].ID || call.Function.Arguments != want.Message.ToolCalls[i].Function.Arguments.String() {
					t.Errorf("tool call %d = %+v, want %+v whole in one delta", i, call, want.Message.ToolCalls[i])
				}
			}
		})
	}
}

func TestOpenAIMidStreamError(t *testing.T) {
	// Ollama decodes the native {"error": ...} line as a chat response, so
	// the client gets one empty chunk (without the role, which only the
	// first chunk has) and the stream ends without [DONE].
	emptyChat := regexp.MustCompile(`^\{"id":"chatcmpl-\d{1,3}","object":"chat\.completion\.chunk","created":\d+,"model":"","system_fingerprint":"fp_ollama","choices":\[\{"index":0,"delta":\{"content":""\},"finish_reason":null\}\]\}$`)
	emptyCompletion := regexp.MustCompile(`^\{"id":"cmpl-\d{1,3}","object":"text_completion","created":\d+,"choices":\[\{"text":"","index":0,"finish_reason":null\}\],"model":"","system_fingerprint":"fp_ollama","usage":\{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0\}\}$`)
	tests := []struct {
		name      string
		path      string
		body      string
		wantEmpty *regexp.Regexp
	}{
		{"chat", "/v1/chat/completions", `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, emptyChat},
		{"completions", "/v1/completions", `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"prompt":"hi"}`, emptyCompletion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ollamasim.New(fastConfig())
			base, _ := start(t, sim)
			sim.SetFailure(ollamasim.Failure{AfterTokens: 3, Message: "runner died"})
			r := do(t, base, "POST", tt.path, tt.body)
			if r.status != 200 || r.contentType != "text/event-stream" {
				t.Fatalf("status %d, content type %q; want 200 text/event-stream", r.status, r.contentType)
			}
			payloads, done := sseEvents(t, r.body)
			if done {
				t.Errorf("stream ended with [DONE] after an error: %q", r.body)
			}
			if len(payloads) != 4 || !tt.wantEmpty.MatchString(payloads[3]) {
				t.Errorf("events = %q, want 3 token chunks and one empty chunk", payloads)
			}
			if strings.Contains(r.body, "runner died") {
				t.Errorf("the error text reached the client: Ollama drops it")
			}

			r = do(t, base, "POST", tt.path, strings.Replace(tt.body, `"stream":true`, `"stream":false`, 1))
			if r.status != 500 || r.contentType != "application/json" || r.body != compatError(500, "runner died") {
				t.Errorf("stream:false = %d %q %q, want 500 application/json %q", r.status, r.contentType, r.body, compatError(500, "runner died"))
			}
		})
	}

	t.Run("early failure keeps its status", func(t *testing.T) {
		sim := ollamasim.New(fastConfig())
		base, _ := start(t, sim)
		sim.SetFailure(ollamasim.Failure{Status: 503, Message: "busy"})
		r := do(t, base, "POST", "/v1/chat/completions", `{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if r.status != 503 || r.contentType != "application/json" || r.body != compatError(503, "busy") {
			t.Errorf("got %d %q %q, want 503 application/json %q", r.status, r.contentType, r.body, compatError(503, "busy"))
		}
	})
}

func TestOpenAICompletions(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	base, _ := start(t, ollamasim.New(fastConfig()))
	native := func(req api.GenerateRequest) api.GenerateResponse {
		t.Helper()
		req.Stream = ptr(false)
		var out api.GenerateResponse
		if err := c.Generate(t.Context(), &req, func(r api.GenerateResponse) error { out = r; return nil }); err != nil {
			t.Fatalf("generate: %v", err)
		}
		return out
	}

	t.Run("non-streaming", func(t *testing.T) {
		want := native(api.GenerateRequest{Model: "llama3.2", Prompt: "Once upon a time", Options: map[string]any{"num_predict": 6}})
		r := do(t, base, "POST", "/v1/completions", `{"model":"llama3.2","prompt":"Once upon a time","max_tokens":6}`)
		if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
			t.Fatalf("status %d, content type %q, body %q", r.status, r.contentType, r.body)
		}
		got := decodeJSON[openai.Completion](t, r.body)
		if !completionID.MatchString(got.Id) || got.Object != "text_completion" || got.Model != "llama3.2" || got.SystemFingerprint != "fp_ollama" {
			t.Errorf("envelope = %s", r.body)
		}
		if len(got.Choices) != 1 || got.Choices[0].Text != want.Response || got.Choices[0].FinishReason == nil || *got.Choices[0].FinishReason != "length" {
			t.Errorf("choices = %s, want the native text %q and finish_reason length", r.body, want.Response)
		}
		if got.Usage != (openai.Usage{PromptTokens: want.PromptEvalCount, CompletionTokens: 6, TotalTokens: want.PromptEvalCount + 6}) {
			t.Errorf("usage = %+v", got.Usage)
		}
	})

	t.Run("streaming with include_usage", func(t *testing.T) {
		want := native(api.GenerateRequest{Model: "llama3.2", Prompt: "Once upon a time"})
		r := do(t, base, "POST", "/v1/completions", `{"model":"llama3.2","prompt":"Once upon a time","stream":true,"stream_options":{"include_usage":true}}`)
		if r.status != 200 || r.contentType != "text/event-stream" {
			t.Fatalf("status %d, content type %q", r.status, r.contentType)
		}
		payloads, done := sseEvents(t, r.body)
		if !done || len(payloads) != want.EvalCount+2 {
			t.Fatalf("got %d events, done %v; want %d tokens, the done chunk, the usage chunk and [DONE]", len(payloads), done, want.EvalCount)
		}
		var text strings.Builder
		for i, p := range payloads[:len(payloads)-1] {
			ch := decodeJSON[openai.CompletionChunk](t, p)
			// Ollama's quirk: a zeroed usage on every chunk.
			if !strings.HasSuffix(p, `,"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`) || len(ch.Choices) != 1 {
				t.Errorf("chunk %d = %s, want one choice and a zeroed usage", i, p)
				continue
			}
			text.WriteString(ch.Choices[0].Text)
		}
		if text.String() != want.Response {
			t.Errorf("streamed %q, want the native %q", text.String(), want.Response)
		}
		last := decodeJSON[openai.CompletionChunk](t, payloads[len(payloads)-1])
		if last.Usage == nil || last.Usage.CompletionTokens != want.EvalCount || last.Usage.PromptTokens != want.PromptEvalCount || !strings.Contains(payloads[len(payloads)-1], `"choices":[]`) {
			t.Errorf("usage chunk = %s", payloads[len(payloads)-1])
		}
	})

	t.Run("streaming without usage", func(t *testing.T) {
		r := do(t, base, "POST", "/v1/completions", `{"model":"llama3.2","prompt":"hi","stream":true,"max_tokens":2}`)
		payloads, done := sseEvents(t, r.body)
		if !done || len(payloads) != 3 || strings.Contains(r.body, "usage") {
			t.Errorf("events = %q, done %v; want 2 tokens and the done chunk without usage, then [DONE]", payloads, done)
		}
	})

	t.Run("empty prompt loads", func(t *testing.T) {
		r := do(t, base, "POST", "/v1/completions", `{"model":"llama3.2","prompt":""}`)
		got := decodeJSON[openai.Completion](t, r.body)
		if r.status != 200 || len(got.Choices) != 1 || got.Choices[0].FinishReason == nil || *got.Choices[0].FinishReason != "load" {
			t.Errorf("got %d %s, want finish_reason load", r.status, r.body)
		}
	})
}

func TestOpenAIEmbeddings(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	base, c := start(t, sim)
	type embeddingList struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string          `json:"object"`
			Embedding json.RawMessage `json:"embedding"`
			Index     int             `json:"index"`
		} `json:"data"`
		Model string                `json:"model"`
		Usage openai.EmbeddingUsage `json:"usage"`
	}
	tests := []struct {
		name   string
		body   string
		native api.EmbedRequest
		base64 bool
	}{
		{"string", `{"model":"nomic-embed-text","input":"hello world"}`, api.EmbedRequest{Model: "nomic-embed-text", Input: "hello world"}, false},
		{"batch", `{"model":"nomic-embed-text","input":["a","b c"],"encoding_format":"float"}`, api.EmbedRequest{Model: "nomic-embed-text", Input: []string{"a", "b c"}}, false},
		{"dimensions", `{"model":"nomic-embed-text","input":"a","dimensions":3}`, api.EmbedRequest{Model: "nomic-embed-text", Input: "a", Dimensions: 3}, false},
		{"empty string is one input", `{"model":"nomic-embed-text","input":""}`, api.EmbedRequest{Model: "nomic-embed-text", Input: []string{""}}, false},
		{"base64", `{"model":"nomic-embed-text","input":["a","b c"],"encoding_format":"BASE64"}`, api.EmbedRequest{Model: "nomic-embed-text", Input: []string{"a", "b c"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := c.Embed(t.Context(), &tt.native)
			if err != nil {
				t.Fatalf("embed: %v", err)
			}
			r := do(t, base, "POST", "/v1/embeddings", tt.body)
			if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
				t.Fatalf("status %d, content type %q, body %q", r.status, r.contentType, r.body)
			}
			got := decodeJSON[embeddingList](t, r.body)
			if got.Object != "list" || got.Model != "nomic-embed-text" || len(got.Data) != len(want.Embeddings) {
				t.Fatalf("list = %s, want %d embeddings", r.body, len(want.Embeddings))
			}
			if got.Usage.PromptTokens != want.PromptEvalCount || got.Usage.TotalTokens != want.PromptEvalCount {
				t.Errorf("usage = %+v, want %d", got.Usage, want.PromptEvalCount)
			}
			for i, d := range got.Data {
				var v []float32
				if tt.base64 {
					s := decodeJSON[string](t, string(d.Embedding))
					b, err := base64.StdEncoding.DecodeString(s)
					if err != nil || len(b)%4 != 0 {
						t.Fatalf("embedding %d = %q, want base64 of float32s", i, s)
					}
					for j := 0; j < len(b); j += 4 {
						v = append(v, math.Float32frombits(binary.LittleEndian.Uint32(b[j:])))
					}
				} else {
					v = decodeJSON[[]float32](t, string(d.Embedding))
				}
				if d.Object != "embedding" || d.Index != i || !slices.Equal(v, want.Embeddings[i]) {
					t.Errorf("data[%d] = %s %d %v, want embedding %d %v", i, d.Object, d.Index, v, i, want.Embeddings[i])
				}
			}
		})
	}
}

func TestOpenAIModels(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = append(cfg.Models, ollamasim.Model{Name: "user/custom:v1"})
	sim := ollamasim.New(cfg)
	base, c := start(t, sim)
	tags, err := c.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}

	t.Run("list", func(t *testing.T) {
		r := do(t, base, "GET", "/v1/models", "")
		if r.status != 200 || r.contentType != "application/json" || !strings.HasSuffix(r.body, "}\n") {
			t.Fatalf("status %d, content type %q, body %q", r.status, r.contentType, r.body)
		}
		got := decodeJSON[openai.ListCompletion](t, r.body)
		var want []openai.Model
		for _, m := range tags.Models {
			owner := "library"
			if m.Name == "user/custom:v1" {
				owner = "user"
			}
			want = append(want, openai.Model{Id: m.Name, Object: "model", Created: m.ModifiedAt.Unix(), OwnedBy: owner})
		}
		if got.Object != "list" || !slices.Equal(got.Data, want) {
			t.Errorf("list = %+v, want %+v", got, want)
		}
	})

	tests := []struct {
		name, path, want string
		created          int64
	}{
		{"retrieve", "/v1/models/llama3.2", `{"id":"llama3.2","object":"model","created":%d,"owned_by":"library"}` + "\n", tags.Models[0].ModifiedAt.Unix()},
		{"retrieve keeps the name as given", "/v1/models/QWEN3:8b", `{"id":"QWEN3:8b","object":"model","created":%d,"owned_by":"library"}` + "\n", tags.Models[2].ModifiedAt.Unix()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, "GET", tt.path, "")
			want := fmt.Sprintf(tt.want, tt.created)
			if r.status != 200 || r.contentType != "application/json" || r.body != want {
				t.Errorf("got %d %q %q, want 200 application/json %q", r.status, r.contentType, r.body, want)
			}
		})
	}

	t.Run("empty list is data null", func(t *testing.T) {
		sim.SetModels(nil)
		r := do(t, base, "GET", "/v1/models", "")
		if want := `{"object":"list","data":null}` + "\n"; r.status != 200 || r.body != want {
			t.Errorf("got %d %q, want 200 %q", r.status, r.body, want)
		}
	})
}

func TestOpenAIStats(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	base, _ := start(t, sim)
	do(t, base, "POST", "/v1/chat/completions", `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	do(t, base, "POST", "/v1/completions", `{"model":"llama3.2","prompt":"hi","max_tokens":3,"stream":true}`)
	do(t, base, "POST", "/v1/embeddings", `{"model":"nomic-embed-text","input":"hi"}`)
	do(t, base, "POST", "/v1/chat/completions", `{"model":"llama3.2","messages":[]}`) // rejected before the native handler
	do(t, base, "GET", "/v1/models", "")
	// nomic-embed-text loads; the two generations have one-word prompts.
	want := ollamasim.Stats{Requests: 3, MaxActive: 1, Completed: 3, Tokens: 5, Loads: 1, PromptTokens: 2}
	if got := sim.Stats(); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

// TestStreamsFlush checks that each SSE event and pull progress line leaves
// as soon as it is made: the second token or layer would take 30s, so the
// first can only arrive in time if it was flushed.
func TestStreamsFlush(t *testing.T) {
	cfg := fastConfig()
	cfg.TokensPerSecond = 1.0 / 30
	cfg.PullDuration = 5 * time.Minute
	base, _ := start(t, ollamasim.New(cfg))
	tests := []struct {
		name, path, body, wantPrefix string
	}{
		{"chat", "/v1/chat/completions", `{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}`, `data: {"id":"chatcmpl-`},
		{"completions", "/v1/completions", `{"model":"llama3.2","stream":true,"prompt":"hi"}`, `data: {"id":"cmpl-`},
		{"pull", "/api/pull", `{"model":"gemma3"}`, `{"status":"pulling manifest"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatalf("new request: %v", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("post: %v", err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, tt.wantPrefix) {
				t.Errorf("first line = %q, %v; want %s... before the next token", line, err, tt.wantPrefix)
			}
		})
	}
}
