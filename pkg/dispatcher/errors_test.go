package dispatcher_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestOwnAnswersAsOllama: what the dispatcher answers itself, without
// asking a worker (a name Ollama cannot take, a model no worker has, a
// missing model), is what a real Ollama 0.32.15 answers, byte for byte
// (each asked of one with curl): status, Content-Type and body. Nothing is
// queued for them and no Ollama is asked.
func TestOwnAnswersAsOllama(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	const (
		nativeJSON = "application/json; charset=utf-8" // gin's c.JSON
		openAIJSON = "application/json"                // the OpenAI middleware's writeError
		msgs       = `"messages":[{"role":"user","content":"x"}]`
	)
	openAIError := func(typ, msg string) string {
		return `{"error":{"message":"` + msg + `","type":"` + typ + `","param":null,"code":null}}` + "\n"
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		ct, want                 string
	}{
		{"generate unknown", "POST", "/api/generate", `{"model":"nope","prompt":"x"}`, 404, nativeJSON, `{"error":"model 'nope' not found"}`},
		{"generate stream unknown", "POST", "/api/generate", `{"model":"nope","prompt":"x","stream":true}`, 404, nativeJSON, `{"error":"model 'nope' not found"}`},
		{"generate invalid name", "POST", "/api/generate", `{"model":"a b","prompt":"x"}`, 400, nativeJSON, `{"error":"invalid model name"}`},
		{"generate invalid host", "POST", "/api/generate", `{"model":"localhost:5000/x","prompt":"x"}`, 400, nativeJSON, `{"error":"invalid model name"}`},
		{"generate two sources", "POST", "/api/generate", `{"model":"x:local:cloud","prompt":"x"}`, 400, nativeJSON,
			`{"error":"use either :local or :cloud, not both: \"x:local:cloud\""}`},
		{"chat unknown", "POST", "/api/chat", `{"model":"nope","messages":[]}`, 404, nativeJSON, `{"error":"model 'nope' not found"}`},
		{"chat invalid name", "POST", "/api/chat", `{"model":"a b","messages":[]}`, 400, nativeJSON, `{"error":"invalid model name"}`},
		{"embed unknown", "POST", "/api/embed", `{"model":"nope","input":"a"}`, 404, nativeJSON, `{"error":"model \"nope\" not found, try pulling it first"}`},
		{"embed invalid name", "POST", "/api/embed", `{"model":"a b","input":"a"}`, 400, nativeJSON, `{"error":"invalid model name"}`},
		{"embeddings unknown", "POST", "/api/embeddings", `{"model":"Nope","prompt":"a"}`, 404, nativeJSON, `{"error":"model \"Nope\" not found, try pulling it first"}`},
		{"show unknown", "POST", "/api/show", `{"model":"nope"}`, 404, nativeJSON, `{"error":"model 'nope:latest' not found"}`},
		{"show unknown in another case", "POST", "/api/show", `{"model":"Nope"}`, 404, nativeJSON, `{"error":"model 'Nope:latest' not found"}`},
		{"show unknown tag of a model the fleet has", "POST", "/api/show", `{"model":"LLAMA3.2:foo"}`, 404, nativeJSON, `{"error":"model 'llama3.2:foo' not found"}`},
		{"show unknown namespace", "POST", "/api/show", `{"model":"User/nope"}`, 404, nativeJSON, `{"error":"model 'User/nope:latest' not found"}`},
		{"show unknown full name", "POST", "/api/show", `{"model":"registry.ollama.ai/library/nope"}`, 404, nativeJSON, `{"error":"model 'nope:latest' not found"}`},
		{"show unknown local", "POST", "/api/show", `{"model":"x:local"}`, 404, nativeJSON, `{"error":"model 'x:latest' not found"}`},
		{"show invalid name", "POST", "/api/show", `{"model":"a b"}`, 400, nativeJSON, `{"error":"invalid model name"}`},
		{"show two sources", "POST", "/api/show", `{"model":"x:local:cloud"}`, 400, nativeJSON,
			`{"error":"use either :local or :cloud, not both: \"x:local:cloud\""}`},
		{"delete missing model", "DELETE", "/api/delete", `{}`, 400, nativeJSON, `{"error":"model is required"}`},
		{"delete blank model", "DELETE", "/api/delete", `{"model":"  "}`, 400, nativeJSON, `{"error":"model is required"}`},
		{"delete invalid name", "DELETE", "/api/delete", `{"model":"a b"}`, 400, nativeJSON, `{"error":"name \"a b\" is invalid"}`},

		{"openai chat unknown", "POST", "/v1/chat/completions", `{"model":"nope",` + msgs + `}`, 404, openAIJSON, openAIError("not_found_error", "model 'nope' not found")},
		{"openai chat stream unknown", "POST", "/v1/chat/completions", `{"model":"nope","stream":true,` + msgs + `}`, 404, openAIJSON,
			openAIError("not_found_error", "model 'nope' not found")},
		{"openai chat invalid name", "POST", "/v1/chat/completions", `{"model":"a b",` + msgs + `}`, 400, openAIJSON, openAIError("invalid_request_error", "invalid model name")},
		{"openai chat two sources", "POST", "/v1/chat/completions", `{"model":"x:local:cloud",` + msgs + `}`, 400, openAIJSON,
			openAIError("invalid_request_error", `use either :local or :cloud, not both: \"x:local:cloud\"`)},
		{"openai chat missing model", "POST", "/v1/chat/completions", `{` + msgs + `}`, 400, openAIJSON, openAIError("invalid_request_error", "model is required")},
		{"openai completions unknown", "POST", "/v1/completions", `{"model":"nope","prompt":"x"}`, 404, openAIJSON, openAIError("not_found_error", "model 'nope' not found")},
		{"openai completions invalid name", "POST", "/v1/completions", `{"model":"a b","prompt":"x"}`, 400, openAIJSON, openAIError("invalid_request_error", "invalid model name")},
		{"openai embeddings unknown", "POST", "/v1/embeddings", `{"model":"nope","input":"a"}`, 404, openAIJSON,
			openAIError("not_found_error", `model \"nope\" not found, try pulling it first`)},
		{"openai embeddings invalid name", "POST", "/v1/embeddings", `{"model":"a b","input":"a"}`, 400, openAIJSON, openAIError("invalid_request_error", "invalid model name")},
		{"openai model unknown", "GET", "/v1/models/nope", "", 404, openAIJSON, openAIError("not_found_error", "model 'nope:latest' not found")},
		{"openai model unknown in another case", "GET", "/v1/models/Nope", "", 404, openAIJSON, openAIError("not_found_error", "model 'Nope:latest' not found")},
		{"openai model invalid name", "GET", "/v1/models/a%20b", "", 400, openAIJSON, openAIError("invalid_request_error", "invalid model name")},

		// Deliberate: a job needs a model (Ollama: 404 model '' not found).
		{"openai completions missing model", "POST", "/v1/completions", `{"prompt":"x"}`, 400, openAIJSON, openAIError("invalid_request_error", "model is required")},
		{"openai embeddings missing model", "POST", "/v1/embeddings", `{"input":"x"}`, 400, openAIJSON, openAIError("invalid_request_error", "model is required")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ct, body := send(t, tt.method, f.URL+tt.path, tt.body)
			if status != tt.status || ct != tt.ct || body != tt.want {
				t.Errorf("got %d %q %s\nwant %d %q %s", status, ct, body, tt.status, tt.ct, tt.want)
			}
		})
	}
	si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := si.CachedInfo().State.LastSeq; n != 0 {
		t.Errorf("%d jobs were published, want none", n)
	}
	if n := f.Sims[0].Stats().Requests; n != 0 {
		t.Errorf("Ollama saw %d requests, want none", n)
	}
}

// send makes a request and returns the answer's status, Content-Type and body.
func send(t *testing.T, method, url, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}
