package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

func setup(t *testing.T) (*nats.Conn, *queue.Queue) {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	// Applying the definitions again must be a no-op, as every process does it.
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	return nc, q
}

func TestPublishFetchAndDoorbell(t *testing.T) {
	nc, q := setup(t)
	ctx := t.Context()
	bell, err := nc.SubscribeSync(job.QueuedPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := q.Consumer(ctx, "llama3.2:latest", job.Interactive)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"llama3.2","prompt":"hi"}`)
	j := queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Reply: "ollamaq.reply.t.x", Body: body, Wait: time.Minute}
	if _, err := q.Publish(ctx, j); err != nil {
		t.Fatal(err)
	}
	// Publishing the same ID again is deduplicated, not queued twice.
	ack, err := q.Publish(ctx, j)
	if err != nil || !ack.Duplicate {
		t.Fatalf("second publish: ack %+v, err %v; want duplicate", ack, err)
	}

	ring, err := bell.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no doorbell: %v", err)
	}
	if want := "ollamaq.queued.llama3_2e2_3alatest.interactive.t"; ring.Subject != want || len(ring.Data) != 0 {
		t.Errorf("doorbell %q with %d bytes, want %q with none", ring.Subject, len(ring.Data), want)
	}

	// The doorbell can ring before the consumer counts the job as pending:
	// ask until it has it, for a while.
	var got []jetstream.Msg
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		batch, err := cons.FetchNoWait(10)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got = append(got, m)
		}
	}
	if len(got) != 1 {
		t.Fatalf("fetched %d jobs, want 1", len(got))
	}
	m := got[0]
	if string(m.Data()) != string(body) || m.Headers().Get(job.HeaderRoute) != "/api/generate" ||
		m.Headers().Get(job.HeaderReply) != j.Reply || m.Headers().Get(job.HeaderDeadline) == "" {
		t.Errorf("job arrived as %q with headers %v", m.Data(), m.Headers())
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	si, err := q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := si.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("stream holds %d jobs after the ack, want 0 (work queue)", n)
	}
}

func TestHasConsumer(t *testing.T) {
	_, q := setup(t)
	ctx := t.Context()
	if ok, err := q.HasConsumer(ctx, "phi3:latest"); ok || err != nil {
		t.Fatalf("HasConsumer before any worker = %v, %v", ok, err)
	}
	if _, err := q.Consumer(ctx, "phi3:latest", job.Interactive); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.HasConsumer(ctx, "phi3:latest"); !ok || err != nil {
		t.Fatalf("HasConsumer after = %v, %v", ok, err)
	}
}

func TestNodeBucketExpiresEntries(t *testing.T) {
	_, q := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	w, err := q.Nodes().WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Publish with a short per-key TTL so the test need not wait for the bucket's.
	msg := nats.NewMsg("$KV." + job.NodeBucket + ".node.a")
	msg.Data = []byte(`{}`)
	if _, err := q.JetStream().PublishMsg(ctx, msg, jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	var ops []jetstream.KeyValueOp
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		ops = append(ops, e.Operation())
		if e.Operation() == jetstream.KeyValuePurge {
			break
		}
	}
	if len(ops) != 2 || ops[0] != jetstream.KeyValuePut {
		t.Fatalf("watcher saw %v, want put then purge", ops)
	}
}

func TestSetupLeavesAnUnchangedStreamAlone(t *testing.T) {
	nc, q := setup(t)
	updates, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.UPDATED.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), q.JetStream(), queue.Options{}); err != nil {
		t.Fatal(err)
	}
	// The server sends the advisory before it answers the update request.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := updates.Pending(); n != 0 {
		t.Fatalf("applying unchanged definitions updated %d streams", n)
	}
	if _, err := queue.Setup(t.Context(), q.JetStream(), queue.Options{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestAuditRetention: a process that sets the audit trail's retention
// applies it, and one that does not keeps it, whether it applies streams/
// or only binds them.
func TestAuditRetention(t *testing.T) {
	_, q := setup(t)
	js := q.JetStream()
	age := func() time.Duration {
		s, err := js.Stream(t.Context(), job.AuditStream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxAge
	}
	if got := age(); got != 90*24*time.Hour {
		t.Fatalf("default retention %s, want 90 days (streams/audit.json)", got)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{AuditRetention: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 7*24*time.Hour {
		t.Fatalf("retention %s after Setup with 7 days", got)
	}
	for _, o := range []queue.Options{{}, {BindOnly: true}} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := queue.Setup(ctx, js, o)
		cancel()
		if err != nil {
			t.Fatalf("Setup %+v after a retention was set: %v", o, err)
		}
		if got := age(); got != 7*24*time.Hour {
			t.Errorf("Setup %+v changed the retention to %s", o, got)
		}
	}
}
