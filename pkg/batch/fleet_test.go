package batch_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// slowSim takes about d per generate request.
func slowSim(d time.Duration, parallel int) ollamasim.Config {
	c := fastSim(parallel)
	c.DefaultTokens = 10
	c.TokensPerSecond = float64(c.DefaultTokens) / d.Seconds()
	return c
}

// replies counts the reply messages of batch id as workers send them.
type replies struct {
	mu       sync.Mutex
	starts   map[string]int // by worker
	attempts map[int]int    // starts by attempt
}

func watchReplies(t *testing.T, nc *nats.Conn, id string) *replies {
	t.Helper()
	r := &replies{starts: map[string]int{}, attempts: map[int]int{}}
	sub, err := nc.Subscribe(batch.ReplySubject(id, "*"), func(m *nats.Msg) {
		if job.Kind(m.Header.Get(job.HeaderKind)) != job.KindStart {
			return
		}
		a, _ := strconv.Atoi(m.Header.Get(job.HeaderAttempt))
		r.mu.Lock()
		r.starts[m.Header.Get(job.HeaderWorker)]++
		r.attempts[a]++
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *replies) count(f func() int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f()
}

// TestBatchSurvivesWorkerKill kills a worker while it runs batch jobs: they
// are redelivered to the other worker and every line still gets exactly
// one answer.
func TestBatchSurvivesWorkerKill(t *testing.T) {
	f, c := fleet(t, fleettest.Options{Workers: 2, Slots: 2, AckWait: time.Second, Sim: slowSim(150*time.Millisecond, 2)})
	const lines = 40
	id := "kill-test"
	seen := watchReplies(t, f.NC, id)
	submit(t, c, source(generateLines(lines)), batch.SubmitOptions{ID: id})
	f.WaitFor("worker 0 running batch jobs", func() bool { return seen.count(func() int { return seen.starts["w0"] }) > 0 })
	f.KillWorker(0)

	st := wait(t, c, id, 40*time.Second)
	got, _ := results(t, c, id)
	if st.State != batch.Done || st.Done != lines || len(got) != lines {
		t.Fatalf("status %s with %d done, %d results; want done, %d", st.State, st.Done, len(got), lines)
	}
	for i := range lines {
		if r := got[fmt.Sprintf("req-%d", i)]; r == nil || r.Error != nil {
			t.Errorf("req-%d: result %+v", i, r)
		}
	}
	if n := seen.count(func() int { return seen.attempts[2] }); n == 0 {
		t.Error("no job ran a second time; the kill tested nothing")
	}
}

// TestInteractiveOvertakesQueuedBatch queues a 10,000-line batch for the
// model of a one-slot worker, then an interactive job: the interactive job
// starts on the next free slot, not after the batch.
func TestInteractiveOvertakesQueuedBatch(t *testing.T) {
	f, c := fleet(t, fleettest.Options{Workers: 1, Slots: 1, Sim: slowSim(20*time.Millisecond, 1)})
	const lines = 10000
	id := "big"
	// One subscription sees the worker's replies in the order it sent them.
	var batchStarts, atSubmit, atStart atomic.Int64
	interactive := job.NewID()
	started := make(chan struct{})
	sub, err := f.NC.Subscribe(job.ReplyPrefix+".>", func(m *nats.Msg) {
		if job.Kind(m.Header.Get(job.HeaderKind)) != job.KindStart {
			return
		}
		if m.Header.Get(job.HeaderJob) == interactive {
			atStart.Store(batchStarts.Load())
			close(started)
			return
		}
		batchStarts.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	submit(t, c, source(generateLines(lines)), batch.SubmitOptions{ID: id})
	f.WaitFor("batch jobs running", func() bool { return batchStarts.Load() > 0 })

	req, err := queue.NewRequester(f.NC, f.Queue, "ptest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	if err := f.NC.Flush(); err != nil { // Count the batch starts that arrived before the publish.
		t.Fatal(err)
	}
	atSubmit.Store(batchStarts.Load())
	st, err := req.Submit(t.Context(), queue.Job{ID: interactive, Model: "llama3.2:latest", Class: job.Interactive,
		Route: "/api/generate", Body: []byte(`{"model":"llama3.2","prompt":"urgent","stream":false}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatalf("the interactive job did not start within 10s; %d batch jobs started meanwhile", batchStarts.Load()-atSubmit.Load())
	}
	// The slot was busy with one batch job when the interactive one was
	// queued; at most that one (and one whose start was still on its way)
	// may start before it.
	if overtook := atStart.Load() - atSubmit.Load(); overtook > 2 {
		t.Errorf("%d batch jobs started between queuing the interactive job and its start; want at most 2", overtook)
	}
	if left := lines - int(atStart.Load()); left < lines-500 {
		t.Errorf("only %d batch lines were left when the interactive job started", left)
	}
	// The batch is not needed any more.
	cctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := c.Cancel(cctx, id, 0); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
}

// TestCancel cancels a batch with a job running and many queued: the running
// job is stopped, the queued ones are dropped without running, and each
// line ends with the canceled error.
func TestCancel(t *testing.T) {
	f, c := fleet(t, fleettest.Options{Workers: 1, Slots: 1, Sim: slowSim(2*time.Second, 1)})
	const lines = 30
	id := "cancel-test"
	seen := watchReplies(t, f.NC, id)
	submit(t, c, source(generateLines(lines)), batch.SubmitOptions{ID: id})
	f.WaitFor("a batch job running", func() bool { return seen.count(func() int { return seen.starts["w0"] }) > 0 })

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := c.Cancel(ctx, id, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if st.State != batch.Canceled || st.Running != 0 {
		t.Fatalf("after Cancel: state %s, %d running; want canceled, none running", st.State, st.Running)
	}
	// The worker drops the rest as it takes them.
	fleettest.WaitFor(t, 20*time.Second, "every line canceled", func() bool {
		st, err = c.Status(t.Context(), id)
		return err == nil && st.Canceled == lines
	})
	if n := seen.count(func() int { return seen.starts["w0"] }); n != 1 {
		t.Errorf("%d jobs started; want only the one that ran at the cancel", n)
	}
	got, _ := results(t, c, id)
	for cid, r := range got {
		if r.Error == nil || r.Error.Code != "batch_cancelled" || r.Response.StatusCode != 499 {
			t.Errorf("%s: result %+v %+v, want batch_cancelled", cid, r.Response, r.Error)
		}
	}
	if _, err := c.Submit(t.Context(), source(generateLines(lines)), batch.SubmitOptions{ID: id}); err == nil {
		t.Error("submitting a canceled batch again succeeded")
	}
	// The stream holds no job of the batch any more.
	s, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter("ollamaq.jobs.>"))
	if err != nil || info.State.Msgs != 0 {
		t.Errorf("job stream holds %d jobs (%v), want 0", info.State.Msgs, err)
	}
}
