package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
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
func finish(t *testing.T, st *queue.Stream) job.Reply {
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

func deadLetters(t *testing.T, f *fleettest.Fleet) []queue.DeadLetter {
	t.Helper()
	dl, err := f.Queue.DeadLetters(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return dl
}

func TestMalformedJobIsDeadLettered(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive,
		Route: "/api/delete", Body: []byte(`{"model":"llama3.2"}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep := finish(t, st)
	if rep.Kind != job.KindError || rep.Status != 400 || !strings.Contains(rep.Error, `route "/api/delete" cannot be queued`) {
		t.Fatalf("got %s %d %q, want a 400 refusal of the route", rep.Kind, rep.Status, rep.Error)
	}
	dl := deadLetters(t, f)
	if len(dl) != 1 || dl[0].JobID() != st.ID() || dl[0].Worker != "w0" || dl[0].Attempts != 1 ||
		dl[0].Subject != "ollamaq.jobs.llama3_2e2_3alatest.interactive.wtest" || !strings.Contains(dl[0].Reason, "cannot be queued") {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestExhaustedRetriesAreDeadLetteredAndRequeueable(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	f.Sims[0].SetFailure(ollamasim.Failure{Status: http.StatusServiceUnavailable, Message: "busy"})
	st := submit(t, req, job.Interactive, "doomed")
	if rep := finish(t, st); rep.Kind != job.KindError || !strings.Contains(rep.Error, "gave up after 4 attempts") {
		t.Fatalf("got %s %q", rep.Kind, rep.Error)
	}
	dl := deadLetters(t, f)
	if len(dl) != 1 || dl[0].Attempts != 4 || dl[0].JobID() != st.ID() {
		t.Fatalf("dead letters %+v", dl)
	}
	// Requeued once Ollama is well again, it runs.
	f.Sims[0].SetFailure(ollamasim.Failure{})
	before := f.Sims[0].Stats().Completed
	if err := f.Queue.Requeue(t.Context(), dl[0].Seq); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("the requeued job to run", func() bool { return f.Sims[0].Stats().Completed == before+1 })
	if dl := deadLetters(t, f); len(dl) != 0 {
		t.Errorf("requeued job still in the dead letters: %+v", dl)
	}
}

func TestReaperBuriesJobsNoWorkerSettled(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, AckWait: time.Second})
	req := requester(t, f)
	// Play the part of workers that take a job and die, four times over, for a
	// model the live worker does not serve.
	cons, err := f.Queue.Consumer(t.Context(), "ghost:latest", job.Interactive)
	if err != nil {
		t.Fatal(err)
	}
	st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "ghost:latest", Class: job.Interactive,
		Route: "/api/generate", Body: []byte(`{"model":"ghost","prompt":"boo"}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for delivery := 1; delivery <= 4; delivery++ {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range b.Messages() {
			n++ // Taken, never settled.
		}
		if n != 1 {
			t.Fatalf("delivery %d: fetched %d jobs", delivery, n)
		}
	}
	// JetStream notices the job is out of deliveries when a worker next asks
	// for work on its consumer; the job is not handed out again.
	if b, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second)); err == nil {
		for range b.Messages() {
			t.Fatal("a job out of deliveries was delivered again")
		}
	}
	rep := finish(t, st)
	if rep.Kind != job.KindError || rep.Status != 502 || !strings.Contains(rep.Error, "not settled after 4 deliveries") {
		t.Fatalf("requester got %s %d %q, want the reaper's 502", rep.Kind, rep.Status, rep.Error)
	}
	dl := deadLetters(t, f)
	if len(dl) != 1 || dl[0].JobID() != st.ID() || dl[0].Attempts != 4 {
		t.Fatalf("dead letters %+v", dl)
	}
	f.WaitFor("the job to leave the work queue", func() bool {
		si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		return err == nil && si.CachedInfo().State.Msgs == 0
	})
	// Its audit record, written before it left: the reaper does not know
	// which worker had it last.
	records := auditRecords(t, f.Queue.JetStream())
	if len(records) != 1 {
		t.Fatalf("%d audit records, want 1", len(records))
	}
	got := records[0].rec
	if got.Job != st.ID() || got.Outcome != audit.DeadLettered || got.Status != 502 || got.Attempts != 4 || got.Worker != "" ||
		got.Requester != "wtest" || got.Model != "ghost:latest" || got.Route != "/api/generate" ||
		!strings.Contains(got.Error, "not settled after 4 deliveries") || got.Queued.IsZero() || bytes.Contains(records[0].raw, []byte("boo")) {
		t.Errorf("audit record %s", records[0].raw)
	}
}

func TestDrainFinishesInFlightJobs(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Parallel = 2
	sim.TokensPerSecond = 40 // About half a second per job.
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim})
	req := requester(t, f)
	a, b := submit(t, req, job.Interactive, "one"), submit(t, req, job.Interactive, "two")
	f.WaitFor("both jobs to run", func() bool { return f.Sims[0].Stats().Active == 2 })
	stopped := make(chan struct{})
	go func() { f.StopWorker(0); close(stopped) }()
	f.WaitFor("the node to report draining", func() bool { n := f.Node(0); return n != nil && n.State == fleet.StateDraining })
	for _, st := range []*queue.Stream{a, b} {
		if rep := finish(t, st); rep.Kind != job.KindDone {
			t.Errorf("in-flight job ended with %s %q during a drain", rep.Kind, rep.Error)
		}
	}
	<-stopped
	f.WaitFor("the drained node to leave the bucket", func() bool { return f.Node(0) == nil })
}

func TestDrainHandsBackWhatOutlivesTheGrace(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 20
	sim.DefaultTokens = 30 // 1.5s: longer than the grace period.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, Grace: 300 * time.Millisecond})
	req := requester(t, f)
	st := submit(t, req, job.Interactive, "long")
	var taken int
	f.WaitFor("a worker to take the job", func() bool {
		for i := range 2 {
			if f.Sims[i].Stats().Active == 1 {
				taken = i
				return true
			}
		}
		return false
	})
	f.StopWorker(taken)
	rep := finish(t, st)
	if rep.Kind != job.KindDone || rep.Attempt != 2 {
		t.Fatalf("job ended with %s on attempt %d (%q), want done on the other worker", rep.Kind, rep.Attempt, rep.Error)
	}
	if n := f.Sims[1-taken].Stats().Completed; n != 1 {
		t.Errorf("the other worker's Ollama completed %d generations, want 1", n)
	}
}

func TestCircuitBreakerStopsPullingThenRecovers(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Breaker: 2 * time.Second})
	req := requester(t, f)
	f.Sims[0].SetFailure(ollamasim.Failure{Status: 500, Message: "model runner has unexpectedly stopped"})
	for i := range 3 {
		if rep := finish(t, submit(t, req, job.Interactive, fmt.Sprint("fail ", i))); rep.Kind != job.KindError || rep.Status != 500 {
			t.Fatalf("job %d: %s %d, want Ollama's 500", i, rep.Kind, rep.Status)
		}
	}
	f.WaitFor("the node to report itself unhealthy", func() bool {
		n := f.Node(0)
		return n != nil && n.State == fleet.StateUnhealthy && strings.Contains(n.LastError, "3 jobs in a row failed")
	})
	// While the breaker is open, a new job waits in the queue for another
	// worker (or this one, later) instead of failing here.
	f.Sims[0].SetFailure(ollamasim.Failure{})
	requests := f.Sims[0].Stats().Requests
	st := submit(t, req, job.Interactive, "better")
	if n := f.Sims[0].Stats().Requests; n != requests {
		t.Fatalf("an open breaker let a job through (%d requests, had %d)", n, requests)
	}
	// Ollama has recovered; after the cool-down the worker tries again and serves.
	if rep := finish(t, st); rep.Kind != job.KindDone {
		t.Fatalf("after recovery: %s %q", rep.Kind, rep.Error)
	}
	f.WaitFor("the node to report ready again", func() bool { n := f.Node(0); return n != nil && n.State == fleet.StateReady })
}

func TestMoreSlotsThanOneFetchMayAsk(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Parallel = 300
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.DefaultTokens = -1, -1, 2
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 300, Sim: sim})
	req := requester(t, f)
	f.StopWorker(0)
	var streams []*queue.Stream
	for i := range 300 {
		streams = append(streams, submit(t, req, job.Interactive, fmt.Sprint("many ", i)))
	}
	f.StartWorker(0) // One round must take them all: more than consumer.json's max_batch of 256.
	for _, st := range streams {
		if rep := finish(t, st); rep.Kind != job.KindDone {
			t.Fatalf("job ended with %s %q", rep.Kind, rep.Error)
		}
	}
}
