package queue_test

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestSetupAddsAsyncLane applies streams/ over a deployment whose job
// stream predates the async lane (two classes): the stream gains the async
// subject, keeps the jobs it holds, and takes async jobs.
func TestSetupAddsAsyncLane(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	old := s.CachedInfo().Config
	old.Subjects = []string{"ollamaq.jobs.*.interactive.*", "ollamaq.jobs.*.batch.*"}
	if _, err := js.UpdateStream(t.Context(), old); err != nil {
		t.Fatalf("make the stream of two lanes: %v", err)
	}
	// A job queued in the old deployment must survive the update.
	body := []byte(`{"model":"llama3.2","prompt":"hi"}`)
	if _, err := js.Publish(t.Context(), job.JobSubject("llama3.2:latest", job.Batch, "t"), body); err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatalf("Setup over the stream of two lanes: %v", err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.Config.Subjects, "ollamaq.jobs.*.async.*") {
		t.Errorf("subjects %v, want the async lane's", info.Config.Subjects)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d jobs after the update, want the 1 queued before", info.State.Msgs)
	}
	if _, err := q.Publish(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Async,
		Route: "/api/generate", Reply: "ollamaq.reply.t.y", Body: body, Wait: time.Minute}); err != nil {
		t.Fatalf("publish an async job: %v", err)
	}
	c, err := q.Consumer(t.Context(), "llama3.2:latest", job.Async)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.CachedInfo().NumPending; n != 1 {
		t.Errorf("async consumer holds %d jobs, want 1", n)
	}
}
