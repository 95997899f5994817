package worker_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// oneModelGPUs is a simulator that holds one model at a time, as a GPU
// with room for one does, loading each in load.
func oneModelGPUs(load time.Duration, models ...string) ollamasim.Config {
	sim := ollamasim.DefaultConfig()
	sim.Models = nil
	for _, m := range models {
		sim.Models = append(sim.Models, ollamasim.Model{Name: m})
	}
	sim.MaxLoadedModels = 1
	sim.LoadDuration = load
	sim.TokensPerSecond = 100
	sim.TimeToFirstToken = time.Millisecond
	sim.Parallel = 1
	return sim
}

// preload has simulator i's Ollama load model, as Ollama's own empty
// generate does, and waits until worker i's record lists it as loaded.
func preload(t *testing.T, f *fleettest.Fleet, i int, model string) {
	t.Helper()
	resp, err := http.Post(f.SimURLs[i].JoinPath("/api/generate").String(), "application/json",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"prompt":""}`, model)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	canonical, err := job.CanonicalModel(model)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitFor(fmt.Sprintf("worker %d's record to list %s loaded", i, model), func() bool {
		n := f.Node(i)
		return n != nil && n.IsLoaded(canonical)
	})
}

// generate sends one unstreamed generate of tokens tokens through the
// dispatcher and fails the test unless it succeeds.
func generate(t *testing.T, f *fleettest.Fleet, model string, tokens int) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"prompt":"hi","stream":false,"options":{"num_predict":%d}}`, model, tokens)
	resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("generate %s: %d %s", model, resp.StatusCode, b)
	}
}

// waiting returns how many jobs of model wait, not yet delivered.
func waiting(t *testing.T, f *fleettest.Fleet, model string) uint64 {
	t.Helper()
	js, err := jetstream.New(f.NC)
	if err != nil {
		t.Fatal(err)
	}
	canonical, _ := job.CanonicalModel(model)
	c, err := js.Consumer(t.Context(), job.Stream, job.ConsumerName(canonical, job.Interactive))
	if err != nil {
		return 0
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending
}

// TestWarmWorkerTakesItsModel: two workers whose GPUs hold one model each,
// one with llama3.2 loaded and one with qwen3; jobs of both models, one at
// a time, each go to the worker that has their model loaded, so no model is
// ever loaded again, while both workers are free for any of them. With
// warm-first off (today's policy) the same jobs make the simulators swap.
func TestWarmWorkerTakesItsModel(t *testing.T) {
	for _, auth := range fleettest.AuthModes {
		t.Run(auth.Name, func(t *testing.T) {
			f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Auth: auth.Auth,
				Sim: oneModelGPUs(200*time.Millisecond, "llama3.2", "qwen3"),
				Worker: func(i int, c *worker.Config) {
					c.ColdAfter = 5 * time.Second // Longer than the test: only warm workers take jobs here.
				}})
			preload(t, f, 0, "llama3.2")
			preload(t, f, 1, "qwen3")
			for i := range 10 {
				generate(t, f, []string{"llama3.2", "qwen3"}[i%2], 2)
			}
			for i, sim := range f.Sims {
				if st := sim.Stats(); st.Loads != 1 || st.Evictions != 0 {
					t.Errorf("simulator %d: %d loads, %d evictions; want 1 (the preload) and 0", i, st.Loads, st.Evictions)
				}
			}
		})
	}
}

// TestColdWorkerTakesAfterTheBound: the worker with llama3.2 loaded is busy
// with a long job; a second llama3.2 job waits for it while the other
// worker, which would have to load the model, is free, until the job has
// waited ColdAfter: then that worker loads the model and runs it, long
// before the warm one is free.
func TestColdWorkerTakesAfterTheBound(t *testing.T) {
	const coldAfter = 700 * time.Millisecond
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1,
		Sim: oneModelGPUs(100*time.Millisecond, "llama3.2", "qwen3"),
		Worker: func(i int, c *worker.Config) {
			c.ColdAfter = coldAfter
			c.ColdBacklog = 0
		}})
	preload(t, f, 0, "llama3.2")
	preload(t, f, 1, "qwen3")
	var wg sync.WaitGroup
	long := time.Now()
	done := f.Sims[0].Stats().Completed
	wg.Go(func() { generate(t, f, "llama3.2", 600) }) // 6 s at 100 tokens/s.
	f.WaitFor("the long job to run on worker 0", func() bool { return f.Sims[0].Stats().Requests == 2 })
	began := time.Now()
	generate(t, f, "llama3.2", 2)
	took := time.Since(began)
	if st := f.Sims[1].Stats(); st.Loads != 2 {
		t.Errorf("simulator 1: %d loads, want 2 (qwen3, then llama3.2 for the second job)", st.Loads)
	}
	if took < coldAfter {
		t.Errorf("the second job ended %s after it was sent, before the cold bound %s: the cold worker did not wait", took, coldAfter)
	}
	if took > coldAfter+3*time.Second {
		t.Errorf("the second job took %s: the cold worker did not take it at the bound %s", took, coldAfter)
	}
	if f.Sims[0].Stats().Completed != done {
		t.Errorf("the long job ended before the second job: %s", time.Since(long))
	}
	wg.Wait()
}

// TestCollationPicksTheOldestBacklog: one worker whose GPU holds one model,
// busy with a gemma3 job while qwen3, llama3.2, llama3.2, qwen3 are queued
// in that order. It then loads qwen3 (the oldest backlog), runs both qwen3
// jobs, and only then loads llama3.2: two loads where arrival order would
// take three.
func TestCollationPicksTheOldestBacklog(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1,
		Sim: oneModelGPUs(50*time.Millisecond, "gemma3", "llama3.2", "qwen3")})
	preload(t, f, 0, "gemma3")
	var wg sync.WaitGroup
	defer wg.Wait()
	done := f.Sims[0].Stats().Completed
	wg.Go(func() { generate(t, f, "gemma3", 100) }) // 1 s at 100 tokens/s.
	f.WaitFor("the gemma3 job to run", func() bool { return f.Sims[0].Stats().Requests == 2 })
	order := make(chan string, 4)
	queued := map[string]uint64{}
	for _, m := range []string{"qwen3", "llama3.2", "llama3.2", "qwen3"} {
		queued[m]++
		wg.Go(func() { generate(t, f, m, 2); order <- m })
		f.WaitFor(m+" job queued", func() bool { return waiting(t, f, m) == queued[m] })
	}
	if f.Sims[0].Stats().Completed != done {
		t.Fatal("the gemma3 job ended before the others were queued; the test's timing assumption failed")
	}
	var got []string
	for range 4 {
		select {
		case m := <-order:
			got = append(got, m)
		case <-time.After(15 * time.Second):
			t.Fatalf("jobs ended so far: %v", got)
		}
	}
	if strings.Join(got, ",") != "qwen3,qwen3,llama3.2,llama3.2" {
		t.Errorf("jobs ended in the order %v, want qwen3 twice, then llama3.2 twice", got)
	}
	if st := f.Sims[0].Stats(); st.Loads != 3 {
		t.Errorf("%d loads, want 3: gemma3, qwen3, llama3.2", st.Loads)
	}
}
