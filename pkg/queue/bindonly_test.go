package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestSetupBindOnly checks that Setup with BindOnly creates no stream: it
// waits until another process applied them, then binds.
func TestSetupBindOnly(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := queue.Setup(ctx, js, queue.Options{BindOnly: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BindOnly with no streams: %v, want %v", err, context.DeadlineExceeded)
	}
	if _, err := js.Stream(t.Context(), job.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream %s after BindOnly: %v, want %v", job.Stream, err, jetstream.ErrStreamNotFound)
	}

	done := make(chan error, 1)
	go func() {
		_, err := queue.Setup(t.Context(), js, queue.Options{BindOnly: true})
		done <- err
	}()
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("BindOnly once applied: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BindOnly still waiting 10s after the streams were applied")
	}
}
