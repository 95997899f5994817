package dispatcher_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
)

// modelsSeen records the model each request to a simulated Ollama named.
type modelsSeen struct {
	mu    sync.Mutex
	names []string
}

func (m *modelsSeen) wrap(_ int, sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body) // A test body always reads.
			var req struct{ Model string }
			if json.Unmarshal(body, &req) == nil {
				m.mu.Lock()
				m.names = append(m.names, req.Model)
				m.mu.Unlock()
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sim.ServeHTTP(w, r)
	})
}

func (m *modelsSeen) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.names
	m.names = nil
	return out
}

// TestModelNamesAsOllama: the dispatcher answers a name Ollama 0.32.15
// cannot parse, or a model no worker has, as that Ollama does (asked of a
// real one with curl), and queues nothing; a name Ollama 0.32 takes (with
// whitespace around it, with a :local suffix) is queued and reaches the
// worker's Ollama as the client wrote it.
func TestModelNamesAsOllama(t *testing.T) {
	var seen modelsSeen
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Ollama: seen.wrap})
	const chat = `"messages":[{"role":"user","content":"hi"}]`
	refused := []struct {
		name, path, body string
		status           int
		ct, want         string
	}{
		{"invalid native", "/api/generate", `{"model":"bad name!","prompt":"x"}`, 400, "application/json; charset=utf-8",
			`{"error":"invalid model name"}`},
		{"invalid chat", "/api/chat", `{"model":"x:y:z",` + chat + `}`, 400, "application/json; charset=utf-8", `{"error":"invalid model name"}`},
		{"invalid OpenAI", "/v1/chat/completions", `{"model":"bad name!",` + chat + `}`, 400, "application/json",
			`{"error":{"message":"invalid model name","type":"invalid_request_error","param":null,"code":null}}` + "\n"},
		{"unknown", "/api/generate", `{"model":" nope","prompt":"x"}`, 404, "application/json; charset=utf-8", `{"error":"model ' nope' not found"}`},
		{"unknown embedding model", "/api/embed", `{"model":"nope","input":"x"}`, 404, "application/json; charset=utf-8",
			`{"error":"model \"nope\" not found, try pulling it first"}`},
		{"unknown legacy embedding model", "/api/embeddings", `{"model":"Nope","prompt":"x"}`, 404, "application/json; charset=utf-8",
			`{"error":"model \"Nope\" not found, try pulling it first"}`},
		{"unknown OpenAI", "/v1/completions", `{"model":"nope","prompt":"x"}`, 404, "application/json",
			`{"error":{"message":"model 'nope' not found","type":"not_found_error","param":null,"code":null}}` + "\n"},
		{"unknown OpenAI embedding model", "/v1/embeddings", `{"model":"nope","input":"x"}`, 404, "application/json",
			`{"error":{"message":"model \"nope\" not found, try pulling it first","type":"not_found_error","param":null,"code":null}}` + "\n"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(f.URL+c.path, "application/json", bytes.NewReader([]byte(c.body)))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != c.ct || string(b) != c.want {
				t.Errorf("got %d %q %s\nwant %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b, c.status, c.ct, c.want)
			}
			if got := seen.take(); len(got) != 0 {
				t.Errorf("Ollama was asked about %q; a refused request must not be queued", got)
			}
		})
	}
	for _, name := range []string{" llama3.2", "llama3.2\t", "LLAMA3.2:local"} {
		t.Run("queued "+name, func(t *testing.T) {
			status, _, body := post(t, f.URL+"/api/generate", `{"model":"`+jsonEscape(name)+`","prompt":"hi","stream":false}`)
			if got := seen.take(); len(got) != 1 || got[0] != name {
				t.Errorf("Ollama was asked about %q (answered %d %s), want exactly %q: the name as the client wrote it", got, status, body, name)
			}
		})
	}
}

func jsonEscape(s string) string {
	b, _ := json.Marshal(s) // A string always marshals.
	return string(b[1 : len(b)-1])
}
