package queue_test

import (
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestQueuedRepliesDoNotDisturbTheStream: queued replies, sent on the reply
// subject before and amid a job's replies, are kept as the job's position
// while it waits and never reach the reader: the attempt's replies come in
// order, whole, with no gap taken for lost replies, and a report that comes
// once the job started is dropped.
func TestQueuedRepliesDoNotDisturbTheStream(t *testing.T) {
	nc, q := setup(t)
	r, err := queue.NewRequester(nc, q, "pos")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	told := make(chan queue.Position, 8)
	r.SetOnQueued(func(_ string, p queue.Position) { told <- p })
	id := job.NewID()
	st, err := r.Submit(t.Context(), queue.Job{ID: id, Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Body: []byte(`{"model":"llama3.2","prompt":"hi"}`), Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p, waiting := st.Queued(); !waiting || p.Position != 0 {
		t.Fatalf("Queued = %+v, %v before any report came; want no position, waiting", p, waiting)
	}

	subject := job.ReplySubject("pos", id)
	send := func(rep job.Reply) {
		t.Helper()
		rep.Job = id
		if err := nc.PublishMsg(queue.ReplyMsg(subject, rep)); err != nil {
			t.Fatal(err)
		}
	}
	send(job.Reply{Kind: job.KindQueued, Position: 3, ETA: 2 * time.Second, Worker: "w0"})
	send(job.Reply{Kind: job.KindQueued, Position: 2, Worker: "w0"})
	for _, want := range []queue.Position{{Position: 3, ETA: 2 * time.Second, Worker: "w0"}, {Position: 2, Worker: "w0"}} {
		select {
		case p := <-told:
			if p.Position != want.Position || p.ETA != want.ETA || p.Worker != want.Worker || p.At.IsZero() {
				t.Fatalf("told %+v, want %+v", p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("not told of position %d", want.Position)
		}
	}
	if p, ok := st.Queued(); !ok || p.Position != 2 || p.ETA != 0 {
		t.Fatalf("Queued = %+v, %v; want position 2 without an ETA", p, ok)
	}

	send(job.Reply{Kind: job.KindStart, Attempt: 1, Seq: 1, Worker: "w1"})
	send(job.Reply{Kind: job.KindQueued, Position: 1, Worker: "w0"}) // Stale: the job started.
	send(job.Reply{Kind: job.KindData, Attempt: 1, Seq: 2, Status: 200, ContentType: "application/x-ndjson", Data: []byte("{}\n")})
	send(job.Reply{Kind: job.KindDone, Attempt: 1, Seq: 3})

	var kinds []job.Kind
	err = st.Follow(t.Context(), 5*time.Second, 5*time.Second, func(rep job.Reply) bool {
		kinds = append(kinds, rep.Kind)
		return rep.Kind != job.KindDone && rep.Kind != job.KindError
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kinds, []job.Kind{job.KindStart, job.KindData, job.KindDone}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("replies %v, want %v", got, want)
	}
	if p, waiting := st.Queued(); waiting || p.Position != 0 {
		t.Errorf("Queued = %+v, %v after the job started; want not waiting", p, waiting)
	}
	select {
	case p := <-told:
		t.Errorf("told of position %+v after the job started", p)
	default:
	}
}
