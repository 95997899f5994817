package queue_test

import (
	"context"
	"encoding/json"
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
	t.Run("answer cut", func(t *testing.T) { testSettledJobLost(t, false) })
	// Only the done reply was lost after the answer's final frame: the
	// answer is whole, and ends with done.
	t.Run("only done lost", func(t *testing.T) { testSettledJobLost(t, true) })
}

func testSettledJobLost(t *testing.T, final bool) {
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
	r.SetStall(stall, func(_ string, attempt int, _ string) { naks <- attempt })
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
	last := `{"response":"a","done":false}` + "\n"
	if final {
		last = `{"response":"a","done":true}` + "\n"
	}
	for i, rep := range []job.Reply{{Kind: job.KindStart, Ack: m.Reply()}, {Kind: job.KindData, Data: []byte(last)}} {
		rep.Job, rep.Attempt, rep.Seq = id, 1, i+1
		if err := nc.PublishMsg(queue.ReplyMsg(reply, rep)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}

	var end job.Reply
	err = st.Follow(ctx, 5*time.Second, 0, func(rep job.Reply) bool {
		end = rep
		return rep.Kind != job.KindDone && rep.Kind != job.KindError
	})
	if err != nil {
		t.Fatalf("Follow: %v (last reply %+v)", err, end)
	}
	switch {
	case final && end.Kind != job.KindDone:
		t.Fatalf("the whole answer ended with %+v, want done", end)
	case !final && (end.Kind != job.KindError || !queue.IsLocal(end) || !strings.Contains(end.Error, "lost reply messages 3 to the end of attempt 1")):
		t.Fatalf("the answer ended with %+v, want the requester's own error naming the lost replies", end)
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

// TestLostRepliesAreContinuedByTheNextWorker: when replies of an attempt
// are lost on the way (a gap in its sequence numbers, as a reconnect
// leaves), the requester does not end the answer with an error: it NAKs the
// delivery, drops the rest of the broken attempt, tells its worker at its
// next probe that it is superseded, and the next worker continues from what
// the requester has.
func TestLostRepliesAreContinuedByTheNextWorker(t *testing.T) {
	t.Run("requester NAKs", func(t *testing.T) { testLostReplies(t, true) })
	// A requester that may not NAK (the client role) tells the worker, whose
	// probe finds its attempt lost, to hand the job back.
	t.Run("worker hands back", func(t *testing.T) { testLostReplies(t, false) })
}

func testLostReplies(t *testing.T, mayNAK bool) {
	nc, q := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r, err := queue.NewRequester(nc, q, "gap")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	naks := make(chan string, 2)
	if mayNAK {
		r.SetStall(time.Minute, func(_ string, _ int, why string) { naks <- why })
	} else {
		r.SetStall(0, nil)
	}
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
	fetch := func() jetstream.Msg {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, ok := <-batch.Messages()
		if !ok {
			t.Fatal("no job fetched")
		}
		return m
	}
	send := func(attempt int, reps ...job.Reply) {
		t.Helper()
		for _, rep := range reps {
			rep.Job, rep.Attempt = id, attempt
			if err := nc.PublishMsg(queue.ReplyMsg(job.ReplySubject("gap", id), rep)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ask := func(req job.ResumeRequest) job.Progress {
		t.Helper()
		b, _ := json.Marshal(req)
		m, err := nc.RequestWithContext(ctx, job.ResumeSubject("gap", id), b)
		if err != nil {
			t.Fatal(err)
		}
		var p job.Progress
		if err := json.Unmarshal(m.Data, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := func(seq int, text string) job.Reply {
		return job.Reply{Kind: job.KindData, Seq: seq, Data: []byte(`{"response":"` + text + `","done":false}` + "\n")}
	}

	m := fetch()
	// Attempt 1: "a" arrives, "b" (seq 3) is lost, "c" and more follow.
	send(1, job.Reply{Kind: job.KindStart, Seq: 1, Ack: m.Reply()}, data(2, "a"), data(4, "c"))
	if mayNAK {
		select {
		case why := <-naks:
			if why != queue.NakLost {
				t.Fatalf("NAKed for %q, want %q", why, queue.NakLost)
			}
		case <-ctx.Done():
			t.Fatal("the gap was not NAKed")
		}
	}
	send(1, data(5, "d"))
	var p job.Progress
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if p = ask(job.ResumeRequest{Attempt: 1, Probe: true}); p.Attempt >= 2 {
			break
		}
	}
	if p.Gone || p.Attempt < 2 || p.Lost == mayNAK {
		t.Fatalf("the broken attempt's worker was told %+v, want a later attempt (superseded), lost=%v", p, !mayNAK)
	}
	if p.Lost {
		if err := m.Nak(); err != nil { // The worker hands it back.
			t.Fatal(err)
		}
	}

	// Attempt 2: JetStream redelivered at once; the worker asks what the
	// requester has: only what came before the gap.
	m2 := fetch()
	if md, _ := m2.Metadata(); md.NumDelivered != 2 {
		t.Fatalf("redelivery %d, want 2", md.NumDelivered)
	}
	if p := ask(job.ResumeRequest{Attempt: 2}); p.Frames != 1 || p.Text != "a" {
		t.Fatalf("the next worker was told %+v, want 1 frame of text \"a\"", p)
	}
	send(2, job.Reply{Kind: job.KindStart, Seq: 1, Ack: m2.Reply()}, data(2, "b"), data(3, "c"),
		job.Reply{Kind: job.KindData, Seq: 4, Data: []byte(`{"response":"","done":true}` + "\n")}, job.Reply{Kind: job.KindDone, Seq: 5})
	if err := m2.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}

	var text strings.Builder
	var last job.Reply
	err = st.Follow(ctx, 5*time.Second, 0, func(rep job.Reply) bool {
		last = rep
		if rep.Kind == job.KindData {
			var chunk struct{ Response string }
			_ = json.Unmarshal(rep.Data, &chunk)
			text.WriteString(chunk.Response)
		}
		return rep.Kind != job.KindDone && rep.Kind != job.KindError
	})
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if last.Kind != job.KindDone || text.String() != "abc" {
		t.Fatalf("the answer ended with %+v and read %q, want done and \"abc\"", last, text.String())
	}
}
