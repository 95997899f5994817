package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestSettledJobWhoseLastRepliesWereLostEndsWithAnError: a worker that
// finished a job and acked it while its last replies were lost (a
// nats-server restart cuts both connections) leaves nothing to redeliver. The
// requester's stall NAK then does nothing; a stall bound later it finds the
// job gone from the stream and ends the answer with an explicit error
// instead of waiting forever.
func TestSettledJobWhoseLastRepliesWereLostEndsWithAnError(t *testing.T) {
	nc, q := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r, err := queue.NewRequester(nc, q, "lost")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	const stall = 200 * time.Millisecond
	naks := make(chan int, 1)
	r.SetStall(stall, func(_ string, attempt int) { naks <- attempt })
	cons, err := q.Consumer(ctx, "llama3.2:latest", job.Interactive)
	if err != nil {
		t.Fatal(err)
	}
	id := job.NewID()
	st, err := r.Submit(ctx, queue.Job{ID: id, Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Body: []byte(`{"model":"llama3.2","prompt":"hi"}`), Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// The worker: start, one data frame, then the ack; its done reply is lost.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := <-batch.Messages()
	if !ok {
		t.Fatal("no job fetched")
	}
	reply := m.Headers().Get(job.HeaderReply)
	for i, rep := range []job.Reply{{Kind: job.KindStart, Ack: m.Reply()}, {Kind: job.KindData, Data: []byte(`{"response":"a"}` + "\n")}} {
		rep.Job, rep.Attempt, rep.Seq = id, 1, i+1
		if err := nc.PublishMsg(queue.ReplyMsg(reply, rep)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}

	var last job.Reply
	err = st.Follow(ctx, 5*time.Second, 0, func(rep job.Reply) bool {
		last = rep
		return rep.Kind != job.KindDone && rep.Kind != job.KindError
	})
	if err != nil {
		t.Fatalf("Follow: %v (last reply %+v)", err, last)
	}
	if last.Kind != job.KindError || !queue.IsLocal(last) || !strings.Contains(last.Error, "lost reply messages 3 to the end of attempt 1") {
		t.Fatalf("the answer ended with %+v, want the requester's own error naming the lost replies", last)
	}
	select {
	case a := <-naks:
		if a != 1 {
			t.Errorf("NAKed attempt %d, want 1", a)
		}
	default:
		t.Error("the stall was not NAKed before the job was found gone")
	}
}
