package realollama_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/realollama"
	"github.com/ollamamax/ollamamax/internal/streamcheck"
	"github.com/ollamamax/ollamamax/internal/tinymodel"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// prefillTemplate is an Ollama legacy template: a last assistant message
// becomes .Response and the template is cut after it, so Ollama continues a
// partial answer instead of starting a new turn (template/template.go).
const prefillTemplate = "{{ if .System }}system: {{ .System }}\n{{ end }}{{ if .Prompt }}user: {{ .Prompt }}\n{{ end }}assistant: {{ .Response }}"

// paced puts a real Ollama behind a proxy that hands on its streams one
// frame every d, as a GPU streams a large model's tokens: the tiny model
// answers at thousands of tokens a second, faster than a worker can be
// killed mid-answer. The bytes are the real Ollama's.
func paced(t *testing.T, target string, d time.Duration) *url.URL {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	p.ModifyResponse = func(r *http.Response) error {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "text/event-stream") || strings.HasPrefix(ct, "application/x-ndjson") {
			r.Body = &pacedBody{r: bufio.NewReader(r.Body), c: r.Body, d: d}
		}
		return nil
	}
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	su, _ := url.Parse(s.URL) // httptest's URL always parses.
	return su
}

type pacedBody struct {
	r       *bufio.Reader
	c       io.Closer
	d       time.Duration
	pending []byte
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if len(b.pending) == 0 {
		line, err := b.r.ReadBytes('\n')
		if len(line) == 0 {
			return 0, err
		}
		if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '{' {
			time.Sleep(b.d) // The end of a frame: an event's blank line, an NDJSON line.
		}
		b.pending = line
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

func (b *pacedBody) Close() error { return b.c.Close() }

// TestRealOllamaContinuesAKilledWorkersStream streams an answer of a real
// Ollama 0.32.15 on each route that continues, kills the worker streaming it
// and lets a worker in front of another real Ollama continue it. A real
// continuation is not the same text as an uninterrupted run (the partial
// answer is tokenized again), so the test checks what must hold anyway: the
// client's stream is one well-formed stream of its API (streamcheck), it
// goes on from the bytes the client had, and its final count is the whole
// answer's, as many tokens as it streamed.
func TestRealOllamaContinuesAKilledWorkersStream(t *testing.T) {
	// Sampled with a seed and a repeat penalty, which the Anthropic and
	// Responses APIs cannot ask for: a random model decoding greedily soon
	// repeats one token, and Ollama cuts a stream after 31 repeats.
	models := []realollama.Model{{Name: "tiny-prefill", Template: prefillTemplate,
		Config:     tinymodel.Config{Name: "tiny-prefill", Seed: 42, NeverStop: true},
		Parameters: map[string]any{"seed": 1, "repeat_penalty": 1.5}}}
	a := realollama.Start(t, realollama.Options{CPU: 0, Models: models})
	b := realollama.Start(t, realollama.Options{CPU: 1, Models: models})
	f := fleettest.Start(t, fleettest.Options{OllamaURLs: []*url.URL{paced(t, a.URL, 10*time.Millisecond), paced(t, b.URL, 10*time.Millisecond)},
		Slots: 1, AckWait: time.Second})
	f.WaitFor("both Ollamas' model in the fleet", func() bool { return f.Node(0) != nil && f.Node(1) != nil && len(f.View.Models()) == 1 })

	const model = `"model":"tiny-prefill"`
	sampled := `"options":{"num_predict":200}`
	for _, req := range []struct{ route, body string }{
		{"/api/generate", `{` + model + `,"prompt":"Once upon a time",` + sampled + `}`},
		{"/api/chat", `{` + model + `,"messages":[{"role":"user","content":"Tell me a story"}],` + sampled + `}`},
		{"/v1/chat/completions", `{` + model + `,"stream":true,"stream_options":{"include_usage":true},"max_tokens":200,"messages":[{"role":"user","content":"Tell me a story"}]}`},
		{"/v1/messages", `{` + model + `,"stream":true,"max_tokens":200,"messages":[{"role":"user","content":"Tell me a story"}]}`},
		{"/v1/responses", `{` + model + `,"stream":true,"max_output_tokens":200,"input":"Tell me a story"}`},
	} {
		t.Run(req.route, func(t *testing.T) {
			resumed := resumedStreams(t, f.URL)
			f.StopWorker(1) // Worker 0 takes the job; worker 1 comes back to continue it.
			stopped := map[int]bool{1: true}
			defer func() {
				for i := range stopped {
					f.StartWorker(i)
					f.WaitFor("the worker to be back", func() bool { return f.Node(i) != nil })
				}
			}()
			resp, err := http.Post(f.URL+req.route, "application/json", strings.NewReader(req.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			var mu sync.Mutex
			var body bytes.Buffer
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(writerFunc(func(p []byte) (int, error) {
					mu.Lock()
					defer mu.Unlock()
					return body.Write(p)
				}), resp.Body)
				done <- err
			}()
			frames := func() int {
				mu.Lock()
				defer mu.Unlock()
				if strings.HasPrefix(req.route, "/api/") {
					return bytes.Count(body.Bytes(), []byte("\n"))
				}
				return bytes.Count(body.Bytes(), []byte("\n\n"))
			}
			fleettest.WaitFor(t, 20*time.Second, "the answer to be under way", func() bool { return frames() >= 20 })
			f.StartWorker(1)
			delete(stopped, 1)
			f.WaitFor("worker 1 to be back", func() bool { return f.Node(1) != nil })
			mu.Lock()
			before := body.String()
			mu.Unlock()
			f.KillWorker(0)
			stopped[0] = true
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the answer did not end after its worker was killed")
			}
			got := body.String()
			if !strings.HasPrefix(got, before) || len(got) == len(before) {
				t.Fatalf("the stream did not go on after the kill: %d bytes before, %d after", len(before), len(got))
			}
			a, err := streamcheck.Read(req.route, body.Bytes())
			if err != nil {
				t.Fatalf("the continued stream is not well-formed: %v\n%s", err, got[max(0, len(got)-3000):])
			}
			if a.Text == "" {
				t.Error("no text")
			}
			if n := resumedStreams(t, f.URL); n != resumed+1 {
				t.Errorf("streams resumed: %d, want %d: another worker did not continue the answer", n, resumed+1)
			}
			// The model never stops before the limit, which the continuation
			// lowers by what was generated: the whole answer is 200 tokens,
			// and so must its count be (the continuation's alone is fewer).
			if counted := finalCount(t, req.route, body.Bytes()); counted != 200 {
				t.Errorf("the final count says %d tokens, the whole answer has 200\n%s", counted, got[max(0, len(got)-1500):])
			}
		})
	}
}

// finalCount reads the count of generated tokens a stream's final frames
// report.
func finalCount(t *testing.T, route string, body []byte) (counted int) {
	t.Helper()
	ct := "text/event-stream"
	if strings.HasPrefix(route, "/api/") {
		ct = "application/x-ndjson"
	}
	err := job.Frames(bytes.NewReader(body), ct, func(f []byte) error {
		var c struct {
			EvalCount int `json:"eval_count"`
			Usage     *struct {
				CompletionTokens int `json:"completion_tokens"`
				OutputTokens     int `json:"output_tokens"`
			} `json:"usage"`
			Response json.RawMessage `json:"response"` // generate's text, a Responses event's response
		}
		if json.Unmarshal(job.Payload(f), &c) != nil {
			return nil
		}
		var r struct {
			Usage *struct {
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		counted = max(counted, c.EvalCount)
		if c.Usage != nil {
			counted = max(counted, c.Usage.CompletionTokens, c.Usage.OutputTokens)
		}
		if json.Unmarshal(c.Response, &r) == nil && r.Usage != nil {
			counted = max(counted, r.Usage.OutputTokens)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return counted
}

// resumedStreams reads the dispatcher's count of answers another worker continued.
func resumedStreams(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^ollamamax_http_streams_resumed_total (\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no ollamamax_http_streams_resumed_total in the dispatcher's metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
