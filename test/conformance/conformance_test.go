// Package conformance_test runs the same HTTP requests against the dispatcher
// (in front of one worker and its simulated Ollama) and against that
// simulated Ollama directly, and asserts the answers match: status, the
// headers clients depend on, and the body, with only volatile values (times,
// durations, generated IDs) masked. The simulator is deterministic, so the
// text itself must match too. Deliberate differences, where we fix an Ollama
// quirk, are listed in each case and in docs/api.md.
package conformance_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, base, method, path, body string, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// volatile keys differ between any two runs of the same request.
var volatile = map[string]bool{
	"created_at": true, "total_duration": true, "load_duration": true, "prompt_eval_duration": true,
	"eval_duration": true, "expires_at": true, "created": true, "id": true,
}

// normalize masks volatile values in a JSON value.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if volatile[k] {
				x[k] = "<" + reflect.TypeOf(e).String() + ">"
				continue
			}
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	}
	return v
}

// frames splits a body into comparable pieces: NDJSON lines, SSE events, or
// the whole body; JSON pieces are decoded and normalized.
func frames(t *testing.T, r response) []any {
	t.Helper()
	var raw [][]byte
	ct := r.header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/x-ndjson"):
		sc := bufio.NewScanner(bytes.NewReader(r.body))
		for sc.Scan() {
			raw = append(raw, bytes.Clone(sc.Bytes()))
		}
	case strings.HasPrefix(ct, "text/event-stream"):
		for _, ev := range bytes.Split(bytes.TrimSpace(r.body), []byte("\n\n")) {
			raw = append(raw, bytes.TrimPrefix(ev, []byte("data: ")))
		}
	default:
		raw = [][]byte{r.body}
	}
	out := make([]any, len(raw))
	for i, b := range raw {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			out[i] = string(b) // Plain text, [DONE], or empty.
			continue
		}
		out[i] = normalize(v)
	}
	return out
}

type tc struct {
	name, method, path, body string
	status                   int // what Ollama answers; both must
	header                   map[string]string
	// differs, when set, explains a deliberate difference; want then holds
	// the dispatcher's expected status and a substring of its body.
	differs    string
	wantStatus int
	wantBody   string
}

// TestConformance runs with NATS authentication off and on: only NATS is
// authenticated, so the HTTP answers must be the same.
func TestConformance(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testConformance(t, m.Auth) })
	}
}

func testConformance(t *testing.T, auth bool) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = -1 // No pacing: the comparison is about bytes, not time.
	sim.TimeToFirstToken = -1
	sim.Models = []ollamasim.Model{
		{Name: "llama3.2:latest", Loaded: true},
		{Name: "qwen3:8b", Capabilities: []string{"completion", "tools", "thinking"}},
		{Name: "nomic-embed-text:latest", Capabilities: []string{"embedding"}},
	}
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 4, Sim: sim, Auth: auth})
	dispatcher, ollama := f.URL, f.SimURLs[0].String()
	f.WaitFor("the models to be listed", func() bool { return len(f.View.Models()) == 3 })

	cases := []tc{
		{name: "root", status: 200, method: "GET", path: "/"},
		{name: "root head", status: 200, method: "HEAD", path: "/"},
		{name: "version", status: 200, method: "GET", path: "/api/version"},
		{name: "tags", status: 200, method: "GET", path: "/api/tags"},
		{name: "tags head", status: 200, method: "HEAD", path: "/api/tags"},
		{name: "unknown route", status: 404, method: "GET", path: "/api/nope"},
		{name: "wrong method", status: 405, method: "GET", path: "/api/generate"},

		{name: "generate stream", status: 200, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"Why is the sky blue?"}`},
		{name: "generate no stream", status: 200, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"hi","stream":false,"options":{"num_predict":5}}`},
		// A request named for its queue position (docs/api.md) is answered as any other.
		{name: "generate named", status: 200, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"Why is the sky blue?"}`,
			header: map[string]string{"Ollamaq-Request-Id": "conformance-1"}},
		{name: "generate load", status: 200, method: "POST", path: "/api/generate", body: `{"model":"llama3.2"}`},
		{name: "generate raw", status: 200, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"[INST] hi [/INST]","raw":true,"stream":false}`},
		{name: "generate think", status: 200, method: "POST", path: "/api/generate", body: `{"model":"qwen3:8b","prompt":"2+2?","think":true,"stream":false}`},
		{name: "generate bad json", status: 400, method: "POST", path: "/api/generate", body: `{"model":`},
		{name: "generate empty body", status: 400, method: "POST", path: "/api/generate", body: ``},
		{name: "generate wrong type", status: 400, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":5}`},
		{name: "generate unknown model", status: 404, method: "POST", path: "/api/generate", body: `{"model":"nope","prompt":"x"}`},
		{name: "generate invalid model name", status: 400, method: "POST", path: "/api/generate", body: `{"model":"a b","prompt":"x"}`},
		{name: "generate missing model", method: "POST", path: "/api/generate", body: `{"prompt":"x"}`,
			differs: "Ollama answers 404 model '' not found; we answer 400 as /api/chat does", wantStatus: 400, wantBody: `{"error":"model is required"}`},
		{name: "generate think unsupported", status: 400, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"x","think":true}`},
		{name: "generate bad think", status: 400, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"x","think":"very"}`},
		{name: "generate bad option type", status: 500, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"x","options":{"temperature":"hot"}}`},
		{name: "generate bad format", status: 500, method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"x","format":"yaml"}`},
		{name: "generate on embedding model", status: 400, method: "POST", path: "/api/generate", body: `{"model":"nomic-embed-text","prompt":"x"}`},

		{name: "chat stream", status: 200, method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"Hello"}]}`},
		{name: "chat no stream", status: 200, method: "POST", path: "/api/chat", body: `{"model":"LLAMA3.2:latest","messages":[{"role":"user","content":"Hello"}],"stream":false}`},
		{name: "chat load", status: 200, method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[]}`},
		{name: "chat tools", status: 200, method: "POST", path: "/api/chat", body: `{"model":"qwen3:8b","messages":[{"role":"user","content":"weather in Paris?"}],"stream":false,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}`},
		{name: "chat tools unsupported", status: 400, method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`},
		{name: "chat missing model", status: 400, method: "POST", path: "/api/chat", body: `{"messages":[]}`},
		{name: "chat unknown model", status: 404, method: "POST", path: "/api/chat", body: `{"model":"nope","messages":[]}`},
		{name: "chat wrong type", status: 400, method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":"hi"}`},

		{name: "embed", status: 200, method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":["a","b"]}`},
		{name: "embed string", status: 200, method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":"a","dimensions":4}`},
		{name: "embed bad input", status: 400, method: "POST", path: "/api/embed", body: `{"model":"nomic-embed-text","input":5}`},
		{name: "embed unknown model", status: 404, method: "POST", path: "/api/embed", body: `{"model":"nope","input":"a"}`},
		{name: "embeddings unknown model", status: 404, method: "POST", path: "/api/embeddings", body: `{"model":"nope","prompt":"a"}`},
		{name: "embeddings legacy", status: 200, method: "POST", path: "/api/embeddings", body: `{"model":"nomic-embed-text","prompt":"a"}`},
		{name: "embeddings missing model", status: 400, method: "POST", path: "/api/embeddings", body: `{"prompt":"a"}`},

		{name: "show", status: 200, method: "POST", path: "/api/show", body: `{"model":"llama3.2"}`},
		{name: "show by name", status: 200, method: "POST", path: "/api/show", body: `{"name":"llama3.2:latest"}`},
		{name: "show missing model", status: 400, method: "POST", path: "/api/show", body: `{}`},
		{name: "show unknown", status: 404, method: "POST", path: "/api/show", body: `{"model":"nope"}`},
		{name: "show unknown, another case", status: 404, method: "POST", path: "/api/show", body: `{"model":"Nope:LATEST"}`},
		{name: "show invalid", status: 400, method: "POST", path: "/api/show", body: `{"model":"a b"}`},

		{name: "openai chat", status: 200, method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}]}`},
		{name: "openai chat stream", status: 200, method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}],"stream":true}`},
		{name: "openai chat stream usage", status: 200, method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "openai chat tools", status: 200, method: "POST", path: "/v1/chat/completions", body: `{"model":"qwen3:8b","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}`},
		{name: "openai chat bad json", status: 400, method: "POST", path: "/v1/chat/completions", body: `{"model":`},
		{name: "openai chat no messages", status: 400, method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[]}`},
		{name: "openai chat unknown model", status: 404, method: "POST", path: "/v1/chat/completions", body: `{"model":"nope","messages":[{"role":"user","content":"Hi"}]}`},
		{name: "openai chat invalid model name", status: 400, method: "POST", path: "/v1/chat/completions", body: `{"model":"a b","messages":[{"role":"user","content":"Hi"}]}`},
		{name: "openai chat missing model", status: 400, method: "POST", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"Hi"}]}`},
		{name: "openai completions", status: 200, method: "POST", path: "/v1/completions", body: `{"model":"llama3.2","prompt":"Once upon"}`},
		{name: "openai completions stream", status: 200, method: "POST", path: "/v1/completions", body: `{"model":"llama3.2","prompt":"Once upon","stream":true,"max_tokens":4}`},
		{name: "openai completions bad prompt", status: 400, method: "POST", path: "/v1/completions", body: `{"model":"llama3.2","prompt":["a"]}`},
		{name: "openai completions unknown model", status: 404, method: "POST", path: "/v1/completions", body: `{"model":"nope","prompt":"a"}`},
		{name: "openai embeddings", status: 200, method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":["a","b"]}`},
		{name: "openai embeddings base64", status: 200, method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":"a","encoding_format":"base64"}`},
		{name: "openai embeddings bad format", status: 400, method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":"a","encoding_format":"hex"}`},
		{name: "openai embeddings no input", status: 400, method: "POST", path: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":[]}`},
		{name: "openai embeddings unknown model", status: 404, method: "POST", path: "/v1/embeddings", body: `{"model":"nope","input":"a"}`},
		{name: "pull", status: 200, method: "POST", path: "/api/pull", body: `{"model":"tinyllama","stream":false}`},
		{name: "pull missing", status: 200, method: "POST", path: "/api/pull", body: `{"model":"missing-model"}`},
		{name: "pull missing no stream", status: 500, method: "POST", path: "/api/pull", body: `{"model":"missing-model","stream":false}`},
		{name: "pull invalid", status: 400, method: "POST", path: "/api/pull", body: `{"model":"a b"}`},
		{name: "copy", status: 200, method: "POST", path: "/api/copy", body: `{"source":"llama3.2","destination":"copied"}`},
		{name: "copy unknown", status: 404, method: "POST", path: "/api/copy", body: `{"source":"nope","destination":"x"}`},
		{name: "copy invalid", status: 400, method: "POST", path: "/api/copy", body: `{"source":"llama3.2","destination":"a b"}`},
		{name: "delete", status: 200, method: "DELETE", path: "/api/delete", body: `{"model":"copied"}`,
			differs: "the first delete of a copy made by each side: compared by status", wantStatus: 200},
		{name: "delete unknown", status: 404, method: "DELETE", path: "/api/delete", body: `{"model":"nope"}`},
		{name: "delete invalid", status: 400, method: "DELETE", path: "/api/delete", body: `{"model":"a b"}`},
		{name: "delete missing model", status: 400, method: "DELETE", path: "/api/delete", body: `{}`},
		{name: "create refused", method: "POST", path: "/api/create", body: `{"model":"x","from":"llama3.2"}`,
			differs: "a fleet cannot build a model from one machine's files", wantStatus: 501, wantBody: "not supported by OllamaMax"},
		{name: "openai model", status: 200, method: "GET", path: "/v1/models/llama3.2:latest"},
		{name: "openai model unknown", status: 404, method: "GET", path: "/v1/models/nope"},
		{name: "openai model invalid", status: 400, method: "GET", path: "/v1/models/a%20b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { compare(t, c, dispatcher, ollama) })
	}

	// Once Ollama is streaming, an error arrives as a last {"error"} line.
	t.Run("mid-stream error", func(t *testing.T) {
		f.Sims[0].SetFailure(ollamasim.Failure{AfterTokens: 3, Message: "model runner crashed"})
		defer f.Sims[0].SetFailure(ollamasim.Failure{})
		compare(t, tc{method: "POST", path: "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"x"}]}`}, dispatcher, ollama)
		compare(t, tc{method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"x"}]}`,
			differs: "Ollama ends a failed SSE stream with an empty chunk and no [DONE]; we add an error event", wantStatus: 200,
			wantBody: `data: {"error":{"message":"the response ended before it was complete","type":"api_error","param":null,"code":null}}`}, dispatcher, ollama)
	})
	t.Run("error before streaming", func(t *testing.T) {
		f.Sims[0].SetFailure(ollamasim.Failure{Status: 500, Message: "model runner has unexpectedly stopped"})
		defer f.Sims[0].SetFailure(ollamasim.Failure{})
		compare(t, tc{method: "POST", path: "/api/generate", body: `{"model":"llama3.2","prompt":"x"}`}, dispatcher, ollama)
		compare(t, tc{method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3.2","messages":[{"role":"user","content":"x"}]}`}, dispatcher, ollama)
	})

	// Listings last: the requests above loaded, copied and deleted models,
	// and the dispatcher's view follows the workers' node records, which
	// they refresh right after such a change and on every heartbeat.
	for _, path := range []string{"/api/ps", "/v1/models"} {
		t.Run(path, func(t *testing.T) {
			want := do(t, ollama, "GET", path, "", nil)
			var got response
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if got = do(t, dispatcher, "GET", path, "", nil); got.status == want.status && reflect.DeepEqual(frames(t, got), frames(t, want)) {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("%s differs after 5s\n got: %d %s\nwant: %d %s", path, got.status, got.body, want.status, want.body)
		})
	}
}

// headersThatMatter are compared exactly (Allow as a set).
var headersThatMatter = []string{"Content-Type"}

func compare(t *testing.T, c tc, dispatcher, ollama string) {
	t.Helper()
	got := do(t, dispatcher, c.method, c.path, c.body, c.header)
	if got.header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id", c.method, c.path)
	}
	if c.differs != "" {
		if got.status != c.wantStatus || !strings.Contains(string(got.body), c.wantBody) {
			t.Errorf("%s %s (%s): got %d %s, want %d containing %s", c.method, c.path, c.differs, got.status, got.body, c.wantStatus, c.wantBody)
		}
		return
	}
	want := do(t, ollama, c.method, c.path, c.body, c.header)
	if c.status != 0 && want.status != c.status {
		t.Errorf("%s %s: the simulated Ollama answered %d, the case expects %d: %s", c.method, c.path, want.status, c.status, want.body)
	}
	if got.status != want.status {
		t.Errorf("%s %s: status %d, Ollama %d\n got: %s\nwant: %s", c.method, c.path, got.status, want.status, got.body, want.body)
		return
	}
	for _, h := range headersThatMatter {
		if g, w := got.header.Get(h), want.header.Get(h); g != w {
			t.Errorf("%s %s: %s %q, Ollama %q", c.method, c.path, h, g, w)
		}
	}
	if g, w := allow(got.header), allow(want.header); !slices.Equal(g, w) {
		t.Errorf("%s %s: Allow %v, Ollama %v", c.method, c.path, g, w)
	}
	if g, w := frames(t, got), frames(t, want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s %s: body differs\n got: %s\nwant: %s", c.method, c.path, got.body, want.body)
	}
}

func allow(h http.Header) []string {
	var out []string
	for _, m := range strings.Split(h.Get("Allow"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}
