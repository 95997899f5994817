package worker_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// submit queues a generate job for llama3.2 and returns its reply stream.
func submit(t *testing.T, req *queue.Requester, class job.Class, prompt string) *queue.Stream {
	t.Helper()
	st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: class, Route: "/api/generate",
		Body: []byte(`{"model":"llama3.2","prompt":"` + prompt + `","stream":false}`), Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// finish reads a stream to its end and returns the last reply.
func finish(t *testing.T, st *queue.Stream) queue.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		rep, err := st.Next(ctx)
		if err != nil {
			t.Fatalf("job %s: %v", st.ID(), err)
		}
		if rep.Kind == job.KindDone || rep.Kind == job.KindError {
			return rep
		}
	}
}

func requester(t *testing.T, f *fleettest.Fleet) *queue.Requester {
	t.Helper()
	req, err := queue.NewRequester(f.NC, f.Queue, "wtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	return req
}

func TestInteractiveBeforeBatch(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1})
	req := requester(t, f)
	f.StopWorker(0) // Queue everything while no worker is up, batch first.

	type entry struct {
		name string
		st   *queue.Stream
	}
	var jobs []entry
	for i := range 5 {
		jobs = append(jobs, entry{"batch", submit(t, req, job.Batch, "batch "+string(rune('a'+i)))})
	}
	jobs = append(jobs, entry{"interactive", submit(t, req, job.Interactive, "urgent")})

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			if rep := finish(t, j.st); rep.Kind != job.KindDone {
				t.Errorf("%s job ended with %s %s", j.name, rep.Kind, rep.Error)
			}
			mu.Lock()
			order = append(order, j.name)
			mu.Unlock()
		})
	}
	f.StartWorker(0)
	wg.Wait()
	if order[0] != "interactive" {
		t.Fatalf("completion order %v: the interactive job queued last should run first on the one slot", order)
	}
}

func TestOllamaDownStopsPullingThenResumes(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	f.SetOllamaDown(0, true)
	f.WaitFor("the worker to report its Ollama unhealthy", func() bool {
		n := f.Node(0)
		return n != nil && n.State == fleet.StateUnhealthy && n.LastError != ""
	})
	st := submit(t, req, job.Interactive, "wait for me")
	// Two more heartbeats go by; the job must still be queued, untouched.
	since := f.Node(0).UpdatedAt
	f.WaitFor("two more heartbeats", func() bool {
		n := f.Node(0)
		return n != nil && n.UpdatedAt.Sub(since) >= 900*time.Millisecond
	})
	si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := f.Queue.JetStream().Consumer(t.Context(), job.Stream, job.ConsumerName("llama3.2:latest", job.Interactive))
	if err != nil {
		t.Fatal(err)
	}
	if si.CachedInfo().State.Msgs != 1 || cons.CachedInfo().NumAckPending != 0 {
		t.Fatalf("stream holds %d jobs, %d taken; want 1 queued and none taken while Ollama is down",
			si.CachedInfo().State.Msgs, cons.CachedInfo().NumAckPending)
	}
	f.SetOllamaDown(0, false)
	if rep := finish(t, st); rep.Kind != job.KindDone {
		t.Fatalf("job ended with %s %q after Ollama came back", rep.Kind, rep.Error)
	}
	f.WaitFor("the worker to report ready again", func() bool { n := f.Node(0); return n != nil && n.State == fleet.StateReady })
}

func TestOllamaClientErrorIsRelayedNotRetried(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	f.Sims[0].SetFailure(ollamasim.Failure{Status: http.StatusBadRequest, Message: `"llama3.2" does not support thinking`})
	rep := finish(t, submit(t, req, job.Interactive, "think"))
	if rep.Kind != job.KindError || rep.Status != 400 || rep.Error != `"llama3.2" does not support thinking` ||
		string(rep.Data) != `{"error":"\"llama3.2\" does not support thinking"}` {
		t.Fatalf("got %s %d %q %s, want Ollama's 400 and message", rep.Kind, rep.Status, rep.Error, rep.Data)
	}
	if n := f.Sims[0].Stats().Requests; n != 1 {
		t.Errorf("Ollama saw %d requests, want 1: a 4xx is not retried", n)
	}
	f.WaitFor("the failed job to be counted", func() bool { n := f.Node(0); return n != nil && n.JobsFailed == 1 })
}

func TestTransientOllamaErrorIsRetried(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	f.Sims[0].SetFailure(ollamasim.Failure{Status: http.StatusServiceUnavailable, Message: "server busy, please try again.  maximum pending requests exceeded"})
	st := submit(t, req, job.Interactive, "again")
	f.WaitFor("the first attempt to fail", func() bool { return f.Sims[0].Stats().Requests >= 1 })
	f.Sims[0].SetFailure(ollamasim.Failure{})
	rep := finish(t, st)
	if rep.Kind != job.KindDone || rep.Attempt < 2 {
		t.Fatalf("got %s on attempt %d (%q), want done on a later attempt", rep.Kind, rep.Attempt, rep.Error)
	}
}

func TestTransientErrorsGiveUpAfterMaxDeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out three retry delays")
	}
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	f.Sims[0].SetFailure(ollamasim.Failure{Status: http.StatusServiceUnavailable, Message: "busy"})
	rep := finish(t, submit(t, req, job.Interactive, "never"))
	if rep.Kind != job.KindError || rep.Status != 503 || !strings.Contains(rep.Error, "gave up after 4 attempts") {
		t.Fatalf("got %s %d %q, want 503 giving up after 4 attempts", rep.Kind, rep.Status, rep.Error)
	}
	if n := f.Sims[0].Stats().Requests; n != 4 {
		t.Errorf("Ollama saw %d requests, want 4 (MaxDeliver)", n)
	}
}

func TestKilledWorkerLeavesTheNodeBucket(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	f.KillWorker(0)
	// Records carry a TTL of three heartbeats (here 0.5s each, rounded up to 2s).
	fleettest.WaitFor(t, 5*time.Second, "the killed worker's record to expire", func() bool { return f.Node(0) == nil })
	if f.Node(1) == nil {
		t.Fatal("the live worker's record expired too")
	}
}
