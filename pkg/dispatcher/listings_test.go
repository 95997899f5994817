package dispatcher_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// fresh polls cond from the response of a command on for at most 100 ms
// and returns how long it took to hold; the test fails when it never did.
func fresh(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			took := time.Since(start)
			t.Logf("%s: the listing followed %s after the response", what, took.Round(10*time.Microsecond))
			return took
		}
		if time.Since(start) > 100*time.Millisecond {
			t.Errorf("%s: the listing did not follow within 100 ms of the response", what)
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond) // Polling a listing, as a client would.
	}
}

// TestListingsFollowChangesAtOnce: /api/tags and /api/ps, asked with
// Ollama's Go client right after a pull, copy, delete, load or unload
// through the dispatcher answered, show the change (within 100 ms; the
// dispatcher answers once its view holds the node records the workers
// wrote, so in practice on the first look), though the workers' heartbeat
// is 5 s.
func TestListingsFollowChangesAtOnce(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Heartbeat: 5 * time.Second})
	c := client(t, f.URL)
	ctx := t.Context()
	listed := func(name string) bool {
		list, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(list.Models, func(m api.ListModelResponse) bool { return m.Model == name })
	}
	loaded := func(name string) bool {
		ps, err := c.ListRunning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(ps.Models, func(m api.ProcessModelResponse) bool { return m.Model == name })
	}

	if err := c.Pull(ctx, &api.PullRequest{Model: "tinyllama"}, func(api.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fresh(t, "pull", func() bool { return listed("tinyllama:latest") })
	if err := c.Copy(ctx, &api.CopyRequest{Source: "llama3.2", Destination: "copied"}); err != nil {
		t.Fatal(err)
	}
	fresh(t, "copy", func() bool { return listed("copied:latest") })
	if err := c.Delete(ctx, &api.DeleteRequest{Model: "copied"}); err != nil {
		t.Fatal(err)
	}
	fresh(t, "delete", func() bool { return !listed("copied:latest") })

	// Ollama's ways to load and unload a model: an empty prompt, and
	// keep_alive 0 with it.
	generate := func(req *api.GenerateRequest) api.GenerateResponse {
		var last api.GenerateResponse
		if err := c.Generate(ctx, req, func(r api.GenerateResponse) error { last = r; return nil }); err != nil {
			t.Fatal(err)
		}
		return last
	}
	generate(&api.GenerateRequest{Model: "llama3.2"})
	fresh(t, "load", func() bool { return loaded("llama3.2:latest") })
	if r := generate(&api.GenerateRequest{Model: "llama3.2", KeepAlive: &api.Duration{}}); r.DoneReason != "unload" {
		t.Errorf("unload answered %+v, want done_reason unload", r)
	}
	fresh(t, "unload", func() bool { return !loaded("llama3.2:latest") })
}

// TestUnloadReachesEveryWorkerThatHasTheModel: a model loaded on every
// worker is unloaded from all by one request, answered as Ollama answers
// it; each worker's Ollama hears it once, and it takes no slot.
func TestUnloadReachesEveryWorkerThatHasTheModel(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "llama3.2:latest", Loaded: true}, {Name: "qwen3:8b", Loaded: true}}
	f := fleettest.Start(t, fleettest.Options{Workers: 3, Sim: sim})
	f.WaitFor("every worker to list its loaded models", func() bool {
		for _, n := range f.View.Nodes() {
			if len(n.Loaded) != 2 {
				return false
			}
		}
		return true
	})
	c := client(t, f.URL)
	var got []api.ChatResponse
	if err := c.Chat(t.Context(), &api.ChatRequest{Model: "llama3.2", KeepAlive: &api.Duration{}}, func(r api.ChatResponse) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].DoneReason != "unload" || !got[0].Done || got[0].Model != "llama3.2" {
		t.Errorf("unload answered %+v, want one done response with done_reason unload", got)
	}
	for i, s := range f.Sims {
		ps, err := client(t, f.SimURLs[i].String()).ListRunning(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ps.Models) != 1 || ps.Models[0].Model != "qwen3:8b" {
			t.Errorf("worker %d's Ollama has %+v loaded, want qwen3:8b only", i, ps.Models)
		}
		if n := s.Stats().Requests; n != 1 {
			t.Errorf("worker %d's Ollama counted %d requests, want the one unload", i, n)
		}
	}
	ps, err := c.ListRunning(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Models) != 1 || ps.Models[0].Model != "qwen3:8b" {
		t.Errorf("the fleet's /api/ps right after the unload: %+v, want qwen3:8b only", ps.Models)
	}
}
