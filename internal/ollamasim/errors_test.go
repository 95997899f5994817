package ollamasim_test

import (
	"testing"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

const jsonUTF8 = "application/json; charset=utf-8"

// TestRoutesAndErrors holds the simulator's answers to what real Ollama
// 0.32.15 answered the same requests with, on a tiny GGUF model (curl,
// status, Content-Type and body compared by hand). Where the models differ
// (real Ollama had no embedding or thinking model), the answer is read from
// its code.
func TestRoutesAndErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(mediaConfig()))
	tests := []struct {
		name            string
		method, path    string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string
		wantAllow       string
	}{
		{name: "root", method: "GET", path: "/", wantStatus: 200, wantContentType: "text/plain; charset=utf-8", wantBody: "Ollama is running"},
		{name: "root head", method: "HEAD", path: "/", wantStatus: 200, wantContentType: "text/plain; charset=utf-8"},
		{name: "version", method: "GET", path: "/api/version", wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"version":"0.32.15"}`},
		{name: "version head", method: "HEAD", path: "/api/version", wantStatus: 200, wantContentType: jsonUTF8},
		{name: "tags head", method: "HEAD", path: "/api/tags", wantStatus: 200, wantContentType: jsonUTF8},
		{name: "unknown route", method: "GET", path: "/api/nope", wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "wrong method", method: "GET", path: "/api/generate", wantStatus: 405, wantContentType: "text/plain", wantBody: "405 method not allowed", wantAllow: "POST"},
		{name: "wrong method on tags", method: "POST", path: "/api/tags", wantStatus: 405, wantContentType: "text/plain", wantBody: "405 method not allowed", wantAllow: "HEAD, GET"},
		{name: "head on ps", method: "HEAD", path: "/api/ps", wantStatus: 405, wantContentType: "text/plain", wantAllow: "GET"},
		{name: "trailing slash redirects", method: "GET", path: "/api/tags/", wantStatus: 301},

		{name: "generate empty body", method: "POST", path: "/api/generate", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "generate malformed", method: "POST", path: "/api/generate", body: `{"model":`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"unexpected EOF"}`},
		{name: "generate bad json", method: "POST", path: "/api/generate", body: `xyz`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid character 'x' looking for beginning of value"}`},
		{name: "generate wrong type", method: "POST", path: "/api/generate", body: `{"model":1}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"json: cannot unmarshal number into Go struct field GenerateRequest.model of type string"}`},
		{name: "generate empty model", method: "POST", path: "/api/generate", body: `{"model":""}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model '' not found"}`},
		{name: "generate invalid model", method: "POST", path: "/api/generate", body: `{"model":"a b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "generate local and cloud", method: "POST", path: "/api/generate", body: `{"model":"x:cloud:local"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"use either :local or :cloud, not both: \"x:cloud:local\""}`},
		{name: "generate local suffix", method: "POST", path: "/api/generate", body: `{"model":"llama3.2:local"}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate unknown model", method: "POST", path: "/api/generate", body: `{"model":"nope","prompt":"hi"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},
		{name: "generate on embedding model", method: "POST", path: "/api/generate", body: `{"model":"nomic-embed-text","prompt":"hi"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support generate"}`},
		{name: "generate think on plain model", method: "POST", path: "/api/generate", body: `{"model":"nomic-embed-text","prompt":"hi","think":true}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support thinking"}`},
		{name: "generate bad think", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","think":"extreme"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid think value: \"extreme\" (must be \"high\", \"medium\", \"low\", \"max\", true, or false)"}`},
		{name: "generate think max on plain model", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","think":"max"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"llama3.2\" does not support thinking"}`},
		{name: "generate think max", method: "POST", path: "/api/generate", body: `{"model":"qwen3:8b","think":"max"}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate think level", method: "POST", path: "/api/generate", body: `{"model":"qwen3:8b","prompt":"a","think":"high","stream":false,"options":{"num_predict":3}}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate images on text model", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","images":["aGVsbG8="]}`, wantStatus: 400, wantContentType: "application/json",
			wantBody: `{"error":"{\"error\":{\"code\":400,\"message\":\"Multimodal data provided, but model does not support multimodal requests.\",\"type\":\"invalid_request_error\"}}"}`},
		{name: "generate images load", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","images":["aGVsbG8="]}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate bad format and images", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","format":"xml","images":["aGVsbG8="]}`, wantStatus: 500, wantContentType: "application/json", wantBody: `{"error":"invalid format: \"\\\"xml\\\"\"; expected \"json\" or a valid JSON Schema object"}`},
		{name: "generate on image model", method: "POST", path: "/api/generate", body: `{"model":"flux","prompt":"a"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"image generation models are not currently supported"}`},
		{name: "generate suffix without insert", method: "POST", path: "/api/generate", body: `{"model":"qwen3:8b","prompt":"a","suffix":"b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"registry.ollama.ai/library/qwen3:8b does not support insert"}`},
		{name: "generate raw with system", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","raw":true,"system":"s"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"raw mode does not support template, system, or context"}`},
		{name: "generate top_logprobs", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","top_logprobs":21}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"top_logprobs must be between 0 and 20"}`},
		{name: "generate bad option type", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","options":{"temperature":"hot"}}`, wantStatus: 500, wantContentType: jsonUTF8, wantBody: `{"error":"option \"temperature\" must be of type float32"}`},
		{name: "generate bad keep_alive", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","keep_alive":true}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"Unsupported type: 'bool'"}`},
		{name: "generate bad format streaming", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","format":"xml"}`, wantStatus: 500, wantContentType: "application/json", wantBody: `{"error":"invalid format: \"\\\"xml\\\"\"; expected \"json\" or a valid JSON Schema object"}`},
		{name: "generate unknown option ignored", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"a","stream":false,"options":{"mirostat":1,"num_predict":1}}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate load", method: "POST", path: "/api/generate", body: `{"model":"llama3.2"}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "generate unload", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","keep_alive":0}`, wantStatus: 200, wantContentType: jsonUTF8},

		{name: "chat empty body", method: "POST", path: "/api/chat", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "chat no model", method: "POST", path: "/api/chat", body: `{"messages":[]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "chat unknown model", method: "POST", path: "/api/chat", body: `{"model":"nope:1b"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope:1b' not found"}`},
		{name: "chat invalid model", method: "POST", path: "/api/chat", body: `{"model":"a b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "chat local and cloud", method: "POST", path: "/api/chat", body: `{"model":"x:cloud:local"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"use either :local or :cloud, not both: \"x:cloud:local\""}`},
		{name: "chat images on text model", method: "POST", path: "/api/chat", body: `{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":"hi","images":["aGVsbG8="]}]}`, wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: `{"error":"{\"error\":{\"code\":400,\"message\":\"Multimodal data provided, but model does not support multimodal requests.\",\"type\":\"invalid_request_error\"}}"}`},
		{name: "chat images on vision model", method: "POST", path: "/api/chat", body: `{"model":"llava","stream":false,"messages":[{"role":"user","content":"hi","images":["aGVsbG8="]}]}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "chat think level", method: "POST", path: "/api/chat", body: `{"model":"qwen3:8b","stream":false,"think":"low","messages":[{"role":"user","content":"hi"}]}`, wantStatus: 200, wantContentType: jsonUTF8},
		{name: "chat on embedding model", method: "POST", path: "/api/chat", body: `{"model":"nomic-embed-text","messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support chat"}`},
		{name: "chat tools without capability", method: "POST", path: "/api/chat", body: `{"model":"qwen3:8b","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"registry.ollama.ai/library/qwen3:8b does not support tools"}`},
		{name: "chat think on plain model", method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"think":true}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"llama3.2\" does not support thinking"}`},
		{name: "chat load", method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[]}`, wantStatus: 200, wantContentType: jsonUTF8},

		{name: "show empty body", method: "POST", path: "/api/show", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "show no model", method: "POST", path: "/api/show", body: `{}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "show unknown model", method: "POST", path: "/api/show", body: `{"name":"nope"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope:latest' not found"}`},
		{name: "show unknown model in another case", method: "POST", path: "/api/show", body: `{"name":"Nope"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'Nope:latest' not found"}`},
		{name: "show unknown tag of a model", method: "POST", path: "/api/show", body: `{"name":"LLAMA3.2:foo"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'llama3.2:foo' not found"}`},
		{name: "show invalid model", method: "POST", path: "/api/show", body: `{"name":"a b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "show other case", method: "POST", path: "/api/show", body: `{"name":"LLAMA3.2"}`, wantStatus: 200, wantContentType: jsonUTF8},

		{name: "embed empty body", method: "POST", path: "/api/embed", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "embed bad input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":[1]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input type"}`},
		{name: "embed number input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":1}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input type"}`},
		{name: "embed unknown model", method: "POST", path: "/api/embed", body: `{"model":"nope","input":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model \"nope\" not found, try pulling it first"}`},
		{name: "embed empty model", method: "POST", path: "/api/embed", body: `{"model":"","input":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model '' not found"}`},
		{name: "embed invalid model first", method: "POST", path: "/api/embed", body: `{"model":"a b","input":1}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "embed on chat model", method: "POST", path: "/api/embed", body: `{"model":"llama3.2","input":"x"}`, wantStatus: 501, wantContentType: jsonUTF8, wantBody: "{\"error\":\"This server does not support embeddings. Start it with `--embeddings`\"}"},
		{name: "embed nothing on chat model", method: "POST", path: "/api/embed", body: `{"model":"llama3.2","input":[]}`, wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"model":"llama3.2","embeddings":[]}`},
		{name: "embed longer than the context", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":"a b c d","truncate":false,"options":{"num_ctx":3}}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"the input length exceeds the context length"}`},
		{name: "embed empty input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":[]}`, wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"model":"nomic-embed-text","embeddings":[]}`},
		{name: "embeddings no model", method: "POST", path: "/api/embeddings", body: `{"prompt":"x"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "embeddings unknown model", method: "POST", path: "/api/embeddings", body: `{"model":"nope","prompt":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model \"nope\" not found, try pulling it first"}`},
		{name: "embeddings invalid model", method: "POST", path: "/api/embeddings", body: `{"model":"a b","prompt":"x"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "embeddings on chat model", method: "POST", path: "/api/embeddings", body: `{"model":"llama3.2","prompt":"x"}`, wantStatus: 500, wantContentType: jsonUTF8, wantBody: "{\"error\":\"This server does not support embeddings. Start it with `--embeddings`\"}"},
		{name: "embeddings nothing on chat model", method: "POST", path: "/api/embeddings", body: `{"model":"llama3.2"}`, wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"embedding":[]}`},

		{name: "delete no model", method: "DELETE", path: "/api/delete", body: `{}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "delete invalid model", method: "DELETE", path: "/api/delete", body: `{"model":"a b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"name \"a b\" is invalid"}`},
		{name: "delete unknown model", method: "DELETE", path: "/api/delete", body: `{"model":"nope"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},
		{name: "copy unknown model", method: "POST", path: "/api/copy", body: `{"source":"nope","destination":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model \"nope\" not found"}`},

		{name: "status", method: "GET", path: "/api/status", wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"cloud":{"disabled":false,"source":"none"}}`},
		{name: "status head", method: "HEAD", path: "/api/status", wantStatus: 405, wantContentType: "text/plain", wantAllow: "GET"},
		{name: "web search empty", method: "POST", path: "/api/experimental/web_search", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "web fetch empty", method: "POST", path: "/api/experimental/web_fetch", body: " \n", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "me", method: "POST", path: "/api/me", wantStatus: 503, wantContentType: jsonUTF8, wantBody: `{"error":"account unavailable"}`},
		{name: "signout", method: "POST", path: "/api/signout", wantStatus: 500, wantContentType: jsonUTF8, wantBody: `{"error":"there was an error signing out"}`},
		{name: "delete key", method: "DELETE", path: "/api/user/keys/abc", wantStatus: 500, wantContentType: jsonUTF8, wantBody: `{"error":"there was an error signing out"}`},
		{name: "aliases removed", method: "POST", path: "/api/experimental/aliases", body: `{}`, wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "aliases get removed", method: "GET", path: "/api/experimental/aliases", wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "image generations removed", method: "POST", path: "/v1/images/generations", body: `{}`, wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "image edits removed", method: "POST", path: "/v1/images/edits", body: `{}`, wantStatus: 404, wantContentType: "text/plain", wantBody: "404 page not found"},
		{name: "embeddings empty prompt", method: "POST", path: "/api/embeddings", body: `{"model":"nomic-embed-text"}`, wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"embedding":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, tt.method, tt.path, tt.body)
			if r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %q)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantContentType != "" && r.contentType != tt.wantContentType {
				t.Errorf("content type = %q, want %q", r.contentType, tt.wantContentType)
			}
			if tt.wantBody != "" && r.body != tt.wantBody {
				t.Errorf("body = %s, want %s", r.body, tt.wantBody)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestLoadResponseShape(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name, path, body, wantPrefix, wantSuffix string
	}{
		{"generate load", "/api/generate", `{"model":"llama3.2"}`, `{"model":"llama3.2","created_at":"`, `","response":"","done":true,"done_reason":"load"}`},
		{"generate unload", "/api/generate", `{"model":"Llama3.2","keep_alive":0,"prompt":""}`, `{"model":"Llama3.2","created_at":"`, `","response":"","done":true,"done_reason":"unload"}`},
		{"chat load", "/api/chat", `{"model":"llama3.2:latest","messages":[]}`, `{"model":"llama3.2:latest","created_at":"`, `","message":{"role":"assistant","content":""},"done":true,"done_reason":"load"}`},
		{"chat unload", "/api/chat", `{"model":"llama3.2","keep_alive":"0s"}`, `{"model":"llama3.2","created_at":"`, `","message":{"role":"assistant","content":""},"done":true,"done_reason":"unload"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, "POST", tt.path, tt.body)
			if r.status != 200 || r.contentType != jsonUTF8 {
				t.Errorf("status %d, content type %q; want 200 %s", r.status, r.contentType, jsonUTF8)
			}
			if len(r.body) < len(tt.wantPrefix)+len(tt.wantSuffix) || r.body[:len(tt.wantPrefix)] != tt.wantPrefix || r.body[len(r.body)-len(tt.wantSuffix):] != tt.wantSuffix {
				t.Errorf("body = %s, want %s<time>%s", r.body, tt.wantPrefix, tt.wantSuffix)
			}
		})
	}
}
