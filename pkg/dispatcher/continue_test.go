package dispatcher_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/internal/streamcheck"
)

// streamed is a request on a streamed route.
type streamed struct {
	route, body string
}

// continuable are requests on every route a worker continues after another
// died, for a plain model (llama3.2) and a thinking one (qwen3).
func continuable(model string) []streamed {
	return []streamed{
		{"/api/generate", `{"model":"` + model + `","prompt":"Once upon a time","options":{"num_predict":60}}`},
		{"/api/chat", `{"model":"` + model + `","messages":[{"role":"user","content":"Tell me a story"}],"options":{"num_predict":60}}`},
		{"/v1/chat/completions", `{"model":"` + model + `","stream":true,"max_tokens":60,"messages":[{"role":"user","content":"Tell me a story"}]}`},
		{"/v1/chat/completions", `{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"max_tokens":60,"messages":[{"role":"user","content":"Tell me a story"}]}`},
		{"/v1/messages", `{"model":"` + model + `","stream":true,"max_tokens":60,"messages":[{"role":"user","content":"Tell me a story"}]}`},
		{"/v1/responses", `{"model":"` + model + `","stream":true,"max_output_tokens":60,"input":"Tell me a story"}`},
	}
}

// growing is a response body read in the background.
type growing struct {
	mu   sync.Mutex
	body bytes.Buffer
	done chan error
}

func readInBackground(r io.Reader) *growing {
	g := &growing{done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := r.Read(buf)
			g.mu.Lock()
			g.body.Write(buf[:n])
			g.mu.Unlock()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				g.done <- err
				return
			}
		}
	}()
	return g
}

// frames counts the frames received so far.
func (g *growing) frames(route string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if strings.HasPrefix(route, "/api/") {
		return bytes.Count(g.body.Bytes(), []byte("\n"))
	}
	return bytes.Count(g.body.Bytes(), []byte("\n\n"))
}

// TestWorkerKilledMidStreamIsContinuedSeamlessly kills the worker streaming
// an answer, on every route that continues, mid-text and (for the thinking
// model) mid-thinking, and requires the stream the client gets to be one
// well-formed stream of its API that says exactly what an uninterrupted run
// says: no text repeated or lost at the seam, the envelope (ids, indexes,
// sequence numbers, the role, the ending) as one run has it, and the final
// counts of the whole answer. Only times, durations and the prompt count
// (the continuation's prompt holds the partial answer) may differ.
func TestWorkerKilledMidStreamIsContinuedSeamlessly(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 40 // 60 tokens: 1.5 s of streaming.
	sim.Models = append(sim.Models, ollamasim.Model{Name: "qwen3:latest", Capabilities: []string{"completion", "thinking"}})
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, AckWait: time.Second})
	type kill struct {
		name   string
		model  string
		frames int // received before the kill
	}
	for _, k := range []kill{{"mid-text", "llama3.2", 12}, {"mid-thinking", "qwen3", 8}, {"thinking model mid-text", "qwen3", 40}} {
		for _, req := range continuable(k.model) {
			if req.route == "/api/generate" && k.model == "qwen3" {
				continue // A thinking generate cannot be continued (TestWorkerLostMidStreamOnARouteThatCannotContinue).
			}
			name := k.name + " " + req.route
			if strings.Contains(req.body, "include_usage") {
				name += " with usage"
			}
			t.Run(name, func(t *testing.T) {
				want := directAnswer(t, f.SimURLs[0].String(), req)
				resumed := sum(scrape(t, f.URL+"/metrics"), "ollamamax_http_streams_resumed_total", nil)
				resp, err := http.Post(f.URL+req.route, "application/json", strings.NewReader(req.body))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("%d %s", resp.StatusCode, b)
				}
				g := readInBackground(resp.Body)
				fleettest.WaitFor(t, 20*time.Second, "the stream to be under way", func() bool { return g.frames(req.route) >= k.frames })
				killed := -1
				for i := range f.Sims {
					if f.Sims[i].Stats().Active == 1 {
						f.KillWorker(i)
						killed = i
					}
				}
				if killed < 0 {
					t.Fatal("no worker was streaming the answer")
				}
				select {
				case err := <-g.done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("the answer did not end after its worker was killed")
				}
				g.mu.Lock()
				body := g.body.Bytes()
				g.mu.Unlock()
				got, err := streamcheck.Read(req.route, body)
				if err != nil {
					t.Fatalf("the continued stream is not well-formed: %v\n%s", err, body)
				}
				if got.Text != want.Text || got.Thinking != want.Thinking {
					t.Errorf("continued answer\n text %q\n thinking %q\nwant\n text %q\n thinking %q", got.Text, got.Thinking, want.Text, want.Thinking)
				}
				if g, w := strings.Join(got.Events, "\n"), strings.Join(want.Events, "\n"); g != w {
					t.Errorf("continued stream\n%s\nuninterrupted\n%s", g, w)
				}
				if n := sum(scrape(t, f.URL+"/metrics"), "ollamamax_http_streams_resumed_total", nil); n != resumed+1 {
					t.Errorf("streams resumed: %v, want %v: the answer was not continued by another worker", n, resumed+1)
				}
				f.StartWorker(killed)
				f.WaitFor("the killed worker to be back", func() bool { return f.Node(killed) != nil })
			})
		}
	}
}

// directAnswer is what the simulated Ollama answers itself, uninterrupted.
func directAnswer(t *testing.T, base string, req streamed) streamcheck.Answer {
	t.Helper()
	resp, err := http.Post(base+req.route, "application/json", strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the simulator answers %d %s", resp.StatusCode, b)
	}
	a, err := streamcheck.Read(req.route, b)
	if err != nil {
		t.Fatalf("the simulator's own stream: %v\n%s", err, b)
	}
	return a
}
