// Package cluster_test runs the fleet on a three-node nats-server cluster
// with R3 streams (fleettest.Options.Cluster, internal/natscluster): the
// node leading the job stream is shut down and restarted under load, a
// worker serves through a leaf node of its own as a GPU box that can only
// dial out does, and in operator mode that leaf can do what the worker role
// may and nothing more; the streams and buckets come up replicated from
// streams/. Both auth modes.
package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// model is the model every test asks for.
const model = "llama3.2"

// answer is what a client read from one streamed generate.
type answer struct {
	prompt string
	status int
	text   strings.Builder
	done   int    // final chunks ("done":true): exactly one for a complete answer
	err    string // a transport error, or an error the stream ended with
	start  time.Time
	end    time.Time
	// gaps are the silences the client heard: from the request to the
	// first line, and between lines.
	first time.Duration
	gap   time.Duration // the longest silence after the first line
	gapAt time.Time     // when that silence ended
}

// generate streams prompt through the dispatcher at base and reads the
// answer line by line, as an Ollama client does.
func generate(ctx context.Context, base, prompt string, tokens int) *answer {
	return generateWithKey(ctx, base, "", prompt, tokens)
}

// generateWithKey is generate with the API key key ("" for none).
func generateWithKey(ctx context.Context, base, key, prompt string, tokens int) *answer {
	a := &answer{prompt: prompt, start: time.Now()}
	defer func() { a.end = time.Now() }()
	body := fmt.Sprintf(`{"model":%q,"prompt":%q,"options":{"num_predict":%d}}`, model, prompt, tokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/generate", strings.NewReader(body))
	if err != nil {
		a.err = err.Error()
		return a
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.err = err.Error()
		return a
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	last := a.start
	for sc.Scan() {
		now := time.Now()
		if a.first == 0 {
			a.first = now.Sub(a.start)
		} else if d := now.Sub(last); d > a.gap {
			a.gap, a.gapAt = d, now
		}
		last = now
		var chunk struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
			Error    string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil {
			a.err = fmt.Sprintf("line %q: %v", sc.Bytes(), err)
			return a
		}
		if chunk.Error != "" {
			a.err = chunk.Error
		}
		a.text.WriteString(chunk.Response)
		if chunk.Done {
			a.done++
		}
	}
	if err := sc.Err(); err != nil && a.err == "" {
		a.err = err.Error()
	}
	return a
}

// complete reports why a is not a complete answer with the text want, or "".
func (a *answer) complete(want string) string {
	switch {
	case a.status != http.StatusOK:
		return fmt.Sprintf("status %d: %s", a.status, a.err)
	case a.err != "":
		return "error: " + a.err
	case a.done != 1:
		return fmt.Sprintf("%d final chunks, want 1", a.done)
	case a.text.String() != want:
		return fmt.Sprintf("text %q, want %q", a.text.String(), want)
	}
	return ""
}

// references runs the fleet's simulator configuration alone, without a
// queue in between, for the answers an uninterrupted run gives: the
// simulator's text depends on the seed, the prompt and the token count
// only, not on its pace.
type references struct {
	t      *testing.T
	client *api.Client
	mu     sync.Mutex
	texts  map[string]string
}

func newReferences(t *testing.T, cfg ollamasim.Config) *references {
	t.Helper()
	cfg.TokensPerSecond, cfg.TimeToFirstToken = -1, -1
	cfg.Parallel = 4
	hs := httptest.NewServer(ollamasim.New(cfg))
	t.Cleanup(hs.Close)
	u, _ := url.Parse(hs.URL) // httptest URLs always parse.
	return &references{t: t, client: api.NewClient(u, hs.Client()), texts: map[string]string{}}
}

// text is the uninterrupted answer to prompt with tokens tokens.
func (r *references) text(prompt string, tokens int) string {
	r.t.Helper()
	key := fmt.Sprintf("%d %s", tokens, prompt)
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.texts[key]; ok {
		return s
	}
	var b strings.Builder
	err := r.client.Generate(r.t.Context(), &api.GenerateRequest{Model: model, Prompt: prompt,
		Options: map[string]any{"num_predict": tokens}},
		func(g api.GenerateResponse) error { b.WriteString(g.Response); return nil })
	if err != nil {
		r.t.Fatalf("reference run: %v", err)
	}
	r.texts[key] = b.String()
	return b.String()
}

// simConfig is the simulated Ollamas' configuration: paced, so that
// answers are still streaming when a server goes down.
func simConfig(tokensPerSecond float64) ollamasim.Config {
	cfg := ollamasim.DefaultConfig()
	cfg.TokensPerSecond = tokensPerSecond
	cfg.TimeToFirstToken = time.Millisecond
	cfg.Parallel = 4
	cfg.Seed = 13
	return cfg
}
