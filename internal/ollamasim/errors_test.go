package ollamasim_test

import (
	"testing"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

const jsonUTF8 = "application/json; charset=utf-8"

func TestRoutesAndErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
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
		{name: "version", method: "GET", path: "/api/version", wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"version":"0.17.4"}`},
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
		{name: "generate unknown model", method: "POST", path: "/api/generate", body: `{"model":"nope","prompt":"hi"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},
		{name: "generate on embedding model", method: "POST", path: "/api/generate", body: `{"model":"nomic-embed-text","prompt":"hi"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support generate"}`},
		{name: "generate think on plain model", method: "POST", path: "/api/generate", body: `{"model":"nomic-embed-text","prompt":"hi","think":true}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support thinking"}`},
		{name: "generate bad think", method: "POST", path: "/api/generate", body: `{"model":"llama3.2","think":"max"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid think value: \"max\" (must be \"high\", \"medium\", \"low\", true, or false)"}`},
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
		{name: "chat on embedding model", method: "POST", path: "/api/chat", body: `{"model":"nomic-embed-text","messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"nomic-embed-text\" does not support chat"}`},
		{name: "chat tools without capability", method: "POST", path: "/api/chat", body: `{"model":"qwen3:8b","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"registry.ollama.ai/library/qwen3:8b does not support tools"}`},
		{name: "chat think on plain model", method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"think":true}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"\"llama3.2\" does not support thinking"}`},
		{name: "chat load", method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[]}`, wantStatus: 200, wantContentType: jsonUTF8},

		{name: "show empty body", method: "POST", path: "/api/show", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "show no model", method: "POST", path: "/api/show", body: `{}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "show unknown model", method: "POST", path: "/api/show", body: `{"name":"nope"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},

		{name: "embed empty body", method: "POST", path: "/api/embed", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "embed bad input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":[1]}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input type"}`},
		{name: "embed number input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":1}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid input type"}`},
		{name: "embed unknown model", method: "POST", path: "/api/embed", body: `{"model":"nope","input":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},
		{name: "embed on chat model", method: "POST", path: "/api/embed", body: `{"model":"llama3.2","input":"x"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"registry.ollama.ai/library/llama3.2:latest does not support embedding"}`},
		{name: "embed empty input", method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":[]}`, wantStatus: 200, wantContentType: jsonUTF8, wantBody: `{"model":"nomic-embed-text","embeddings":[]}`},
		{name: "embeddings no model", method: "POST", path: "/api/embeddings", body: `{"prompt":"x"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`},
		{name: "embeddings unknown model", method: "POST", path: "/api/embeddings", body: `{"model":"nope","prompt":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model \"nope\" not found, try pulling it first"}`},
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
