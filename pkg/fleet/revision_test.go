package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestWaitRevision: the revision Put returns is the one the view waits
// for; a revision the view has not seen waits out its timeout.
func TestWaitRevision(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := fleet.Watch(t.Context(), q.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-v.Ready()

	var revs []uint64
	for range 3 {
		rev, err := fleet.Put(t.Context(), js, &fleet.Node{ID: "w1", State: fleet.StateReady}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	if revs[0] == 0 || revs[1] <= revs[0] || revs[2] <= revs[1] {
		t.Fatalf("revisions %v, want increasing from 1", revs)
	}
	if !v.WaitRevision(t.Context(), "w1", revs[2], 5*time.Second) {
		t.Fatal("the view never saw the last record's revision")
	}
	if !v.WaitRevision(t.Context(), "w1", revs[0], time.Millisecond) {
		t.Error("an earlier revision than the view's is not seen")
	}
	start := time.Now()
	if v.WaitRevision(t.Context(), "w1", revs[2]+1, 50*time.Millisecond) || time.Since(start) < 50*time.Millisecond {
		t.Error("a revision nobody wrote was seen, or not waited for")
	}
	if v.WaitRevision(t.Context(), "w2", 1, 10*time.Millisecond) {
		t.Error("a node without a record was seen")
	}
}
