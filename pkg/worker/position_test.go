package worker_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// slowFleet is a fleet whose jobs take about two seconds each, so that a
// queue forms and its reports can be followed.
func slowFleet(t *testing.T, workers int) *fleettest.Fleet {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 10
	sim.DefaultTokens = 20
	sim.TimeToFirstToken = time.Millisecond
	return fleettest.Start(t, fleettest.Options{Workers: workers, Slots: 1, Sim: sim})
}

// TestQueuedRepliesCountDownToTheStart: a job behind others, queued by a
// raw NATS client (a core subscription to its reply subjects, no
// pkg/queue), gets queued replies on its reply subject while it waits,
// whose positions count down to 1, with an ETA once the queue's rate was
// measured, and then its start; nothing after it. The job that started
// at once gets no report.
func TestQueuedRepliesCountDownToTheStart(t *testing.T) {
	f := slowFleet(t, 1)
	req := requester(t, f)
	var mu sync.Mutex
	reported := map[string]int{}
	req.SetOnQueued(func(id string, p queue.Position) {
		mu.Lock()
		defer mu.Unlock()
		reported[id]++
	})
	first := submit(t, req, job.Interactive, "one")
	fleettest.WaitFor(t, 5*time.Second, "the first job to start", func() bool { return f.Node(0).SlotsBusy == 1 })
	ahead := []*queue.Stream{submit(t, req, job.Interactive, "two"), submit(t, req, job.Interactive, "three")}

	// The raw client: nats.go alone, as docs/protocol.md shows.
	nc := f.NC
	id := job.NewID()
	sub, err := nc.SubscribeSync(job.ReplyPrefix + ".raw.>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(job.JobSubject("llama3.2:latest", job.Interactive, "raw"))
	m.Header.Set(job.HeaderJob, id)
	m.Header.Set(job.HeaderRoute, "/api/generate")
	m.Header.Set(job.HeaderReply, job.ReplySubject("raw", id))
	m.Header.Set(job.HeaderPositions, "1") // It reads queued replies.
	m.Data = []byte(`{"model":"llama3.2","prompt":"four","stream":false}`)
	if _, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}

	var positions []int
	var etas []time.Duration
	started := false
	for deadline := time.Now().Add(30 * time.Second); ; {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("after positions %v: %v", positions, err)
		}
		kind := msg.Header.Get(job.HeaderKind)
		switch {
		case kind == string(job.KindQueued) && started:
			t.Fatalf("a queued reply after the start: %v", msg.Header)
		case kind == string(job.KindQueued):
			if a, s := msg.Header.Get(job.HeaderAttempt), msg.Header.Get(job.HeaderSeq); a != "0" || s != "0" || msg.Header.Get(job.HeaderJob) != id {
				t.Fatalf("queued reply %v: want attempt and seq 0 and job %s", msg.Header, id)
			}
			p, err := strconv.Atoi(msg.Header.Get(job.HeaderPosition))
			if err != nil {
				t.Fatalf("queued reply without a position: %v", msg.Header)
			}
			var eta time.Duration
			if s := msg.Header.Get(job.HeaderETA); s != "" {
				ms, _ := strconv.Atoi(s)
				eta = time.Duration(ms) * time.Millisecond
			}
			positions, etas = append(positions, p), append(etas, eta)
		case kind == string(job.KindStart):
			started = true
		case kind == string(job.KindDone) || kind == string(job.KindError):
			if kind != string(job.KindDone) {
				t.Fatalf("the job ended with %v", msg.Header)
			}
			goto ended
		}
	}
ended:
	t.Logf("positions %v, ETAs %v", positions, etas)
	if len(positions) < 2 {
		t.Fatalf("positions %v: want reports while it waited behind 3 jobs", positions)
	}
	if positions[0] > 3 || positions[0] == 1 || positions[len(positions)-1] != 1 {
		t.Errorf("positions %v: want 2 or 3 first and 1 last", positions)
	}
	for i := 1; i < len(positions); i++ {
		if positions[i] > positions[i-1] {
			t.Errorf("positions %v go up", positions)
		}
	}
	if etas[len(etas)-1] <= 0 {
		t.Errorf("ETAs %v: the last report has none, though jobs were delivered at a measurable rate", etas)
	}
	for _, st := range append(ahead, first) {
		finish(t, st)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := reported[first.ID()]; n != 0 {
		t.Errorf("the job that started at once got %d reports", n)
	}
	if reported[ahead[1].ID()] == 0 {
		t.Errorf("the third job got no report through pkg/queue")
	}
}

// TestOneWorkerReportsAQueue: of two workers serving a model, the one with
// the lower ID reports its queue, once a second per job, not both.
func TestOneWorkerReportsAQueue(t *testing.T) {
	f := slowFleet(t, 2)
	req := requester(t, f)
	var mu sync.Mutex
	by := map[string]int{}
	times := map[string][]time.Time{}
	req.SetOnQueued(func(id string, p queue.Position) {
		mu.Lock()
		defer mu.Unlock()
		by[p.Worker]++
		times[id] = append(times[id], p.At)
	})
	var sts []*queue.Stream
	for i := range 8 { // Two running, six waiting two to six seconds.
		sts = append(sts, submit(t, req, job.Interactive, "job "+strconv.Itoa(i)))
	}
	for _, st := range sts {
		finish(t, st)
	}
	mu.Lock()
	defer mu.Unlock()
	if by["w0"] == 0 || by["w1"] != 0 {
		t.Errorf("reports by worker %v: want all by w0", by)
	}
	for id, ts := range times {
		for i := 1; i < len(ts); i++ {
			if d := ts[i].Sub(ts[i-1]); d < 500*time.Millisecond {
				t.Errorf("job %s: two reports %s apart, want about a second", id, d)
			}
		}
	}
}
