// Package realollama_test runs the same HTTP requests against a real Ollama
// (internal/realollama: the release in ../shared/ollama, tiny random
// models) and against what stands in for it or in front of it, and compares
// the answers: (a) the simulator, internal/ollamasim, and (b) the
// dispatcher in front of a worker in front of that same real Ollama.
//
// The tiny models' text is random, so the suite compares shapes, not text:
// status, Content-Type, Allow and Location, and the body's JSON field names
// recursively, with values only where they are deterministic (error
// messages, types, model names, roles, finish reasons, event types; see
// kept), frame by frame for streams with repeats collapsed. Every
// difference is either listed in the table in differences_test.go, with its
// reason, or fails the test.
//
// Without an Ollama binary the suite skips, saying why (see
// internal/realollama). OLLAMAMAX_REALOLLAMA_DUMP=1 logs every answer.
package realollama_test

import (
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/internal/realollama"
	"github.com/ollamamax/ollamamax/internal/tinymodel"
)

// The two targets compared with real Ollama.
const (
	sim        = "sim"
	dispatcher = "dispatcher"
)

// simModels mirror realollama.DefaultModels in the simulator: each has the
// tiny models' embedding length, which /api/tags lists for every model.
var simModels = []ollamasim.Model{
	{Name: "tiny:latest", Family: "llama", ParameterSize: "140K", EmbeddingLength: tinymodel.EmbeddingLength},
	{Name: "tiny-long:latest", Family: "llama", ParameterSize: "140K", EmbeddingLength: tinymodel.EmbeddingLength},
	{Name: "tiny-tools:latest", Family: "llama", ParameterSize: "140K", Capabilities: []string{"completion", "tools"}, EmbeddingLength: tinymodel.EmbeddingLength},
	{Name: "tiny-embed:latest", Family: "llama", ParameterSize: "140K", Capabilities: []string{"embedding"}, EmbeddingLength: tinymodel.EmbeddingLength},
}

func TestRealOllama(t *testing.T) {
	start := time.Now()
	// Room for all four models at once, as the simulator has: /api/ps then
	// lists the same models on both.
	ollama := realollama.Start(t, realollama.Options{CPU: 1, Env: []string{"OLLAMA_MAX_LOADED_MODELS=4"}})
	t.Logf("real Ollama up with %d models in %s", len(realollama.DefaultModels), time.Since(start).Round(time.Millisecond))

	cfg := ollamasim.DefaultConfig()
	cfg.TokensPerSecond, cfg.TimeToFirstToken = -1, -1
	cfg.Models = simModels
	cfg.Version = realollama.Version
	simURL := serveSim(t, cfg)

	u, err := url.Parse(ollama.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := fleettest.Start(t, fleettest.Options{OllamaURLs: []*url.URL{u}, Slots: 1})
	f.WaitFor("the real Ollama's models in the fleet", func() bool { return len(f.View.Models()) == len(realollama.DefaultModels) })

	targets := map[string]string{sim: simURL, dispatcher: f.URL}
	dump := os.Getenv("OLLAMAMAX_REALOLLAMA_DUMP") != ""
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			want := observe(t, ollama.URL, c, "real")
			if dump {
				t.Logf("real: %d %s %s", want.Status, want.ContentType, clip(want.raw))
			}
			if c.status != 0 && want.Status != c.status {
				t.Errorf("real Ollama answered %d, the case expects %d: %s", want.Status, c.status, clip(want.raw))
			}
			for _, target := range []string{sim, dispatcher} {
				t.Run(target, func(t *testing.T) {
					got := c.observe(t, targets[target], target, want)
					if dump {
						t.Logf("%s: %d %s %s", target, got.Status, got.ContentType, clip(got.raw))
					}
					judge(t, target, c, got, want)
				})
			}
		})
	}
	for _, k := range known {
		for _, name := range k.cases {
			if !seen[name] {
				t.Errorf("differences table: no case %q", name)
			}
		}
	}
	t.Logf("%d cases against real Ollama, the simulator and the dispatcher in %s", len(cases), time.Since(start).Round(time.Millisecond))
}

// observe asks target; a listing that follows the fleet's records (the
// dispatcher's /api/ps after a load) is asked again until it matches or
// five seconds pass.
func (c tc) observe(t *testing.T, base, target string, want observation) observation {
	t.Helper()
	got := observe(t, base, c, target)
	if !c.eventual || target != dispatcher {
		return got
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(differences(got, want, nil)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		got = observe(t, base, c, target)
	}
	return got
}

// judge fails the test on a difference the table does not list, skips it
// on one listed as to be fixed, passes one listed as deliberate, and fails
// on a listed difference that is gone (the entry must go too).
func judge(t *testing.T, target string, c tc, got, want observation) {
	t.Helper()
	var drop []string
	if target == sim {
		drop = c.simDrop
	}
	diff := differences(got, want, drop)
	k, listed := lookup(target, c.name)
	switch {
	case len(diff) == 0 && !listed:
	case len(diff) == 0:
		t.Errorf("%s %s: listed as differing (%s: %s) but answers as real Ollama does now: remove it from the table", c.method, c.path, k.kind, k.reason)
	case !listed:
		t.Errorf("%s %s %s: unexplained difference from real Ollama:\n  %s\n  got:  %s\n  real: %s",
			c.method, c.path, clip([]byte(c.body)), strings.Join(diff, "\n  "), clip(got.raw), clip(want.raw))
	case k.kind == deliberate:
		if k.status != 0 && got.Status != k.status {
			t.Errorf("%s %s (%s): status %d, the table expects %d: %s", c.method, c.path, k.reason, got.Status, k.status, clip(got.raw))
		}
		if k.contains != "" && !strings.Contains(string(got.raw), k.contains) {
			t.Errorf("%s %s (%s): body %s, the table expects it to contain %s", c.method, c.path, k.reason, clip(got.raw), k.contains)
		}
	default:
		t.Skipf("%s: %s\n  %s\n  got:  %s\n  real: %s", k.kind, k.reason, strings.Join(diff, "\n  "), clip(got.raw), clip(want.raw))
	}
}

// clip shortens a body for a message.
func clip(b []byte) string {
	const n = 600
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
