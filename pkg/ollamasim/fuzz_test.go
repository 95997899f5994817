package ollamasim_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/ollamasim"
)

// FuzzRequestBodies checks that no body makes the simulator panic or answer
// with anything but JSON, NDJSON or Ollama's {"error": ...}.
func FuzzRequestBodies(f *testing.F) {
	paths := []string{"/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show"}
	seeds := []struct {
		path uint8
		body string
	}{
		{0, `{"model":"llama3.2","prompt":"hi"}`},
		{0, `{"model":"llama3.2","prompt":"hi","stream":false,"options":{"stop":["a"],"seed":3}}`},
		{0, `{"model":"qwen3:8b","prompt":"hi","think":"high","format":{"type":"object"}}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":3}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}}}]}`},
		{2, `{"model":"nomic-embed-text","input":["a","b"],"dimensions":2}`},
		{3, `{"model":"nomic-embed-text","prompt":"a"}`},
		{4, `{"name":"llama3.2"}`},
		{0, `{"model":"llama3.2","keep_alive":"-1"}`},
		{1, `{"model":"llama3.2","options":{"num_ctx":-5,"num_predict":-2}}`},
		{0, ``},
		{1, `[`},
	}
	for _, s := range seeds {
		f.Add(s.path, s.body)
	}
	cfg := fastConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, path uint8, body string) {
		req := httptest.NewRequest("POST", paths[int(path)%len(paths)], strings.NewReader(body))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("status %d with body %q, want {\"error\": ...}", rec.Code, rec.Body)
			}
			return
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(rec.Body.String(), "\n"), "\n") {
			if !json.Valid([]byte(line)) {
				t.Fatalf("status %d with invalid JSON line %q", rec.Code, line)
			}
		}
	})
}
