package reload_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/reload"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// calls records what Run handed apply.
type calls struct {
	mu  sync.Mutex
	got []string
}

func (c *calls) apply(cause reload.Cause, shared string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, string(cause)+": "+shared)
}

func (c *calls) wait(t *testing.T, want ...string) {
	t.Helper()
	fleettest.WaitFor(t, 10*time.Second, "apply calls", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.got) < len(want) {
			return false
		}
		for i, w := range want {
			if c.got[i] != w {
				t.Fatalf("apply calls %q, want %q", c.got, want)
			}
		}
		return true
	})
}

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := q.Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestWatcher follows the entry: its text at start, a signal with the
// last text, each change (a put of the same text is none), a delete as
// no settings, and another entry not at all.
func TestWatcher(t *testing.T) {
	kv := bucket(t)
	ctx := t.Context()
	if _, err := kv.PutString(ctx, job.ConfigWorker, "slots=2"); err != nil {
		t.Fatal(err)
	}
	w, text, err := reload.Watch(ctx, kv, job.ConfigWorker)
	if err != nil || text != "slots=2" {
		t.Fatalf("Watch: %q, %v; want slots=2", text, err)
	}
	signal := make(chan struct{})
	var c calls
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(rctx, signal, c.apply, func(err error) { t.Errorf("onError: %v", err) })
	}()
	defer func() { stop(); <-done }()

	signal <- struct{}{}
	c.wait(t, "signal: slots=2")
	for _, put := range []struct{ key, text string }{
		{job.ConfigWorker, "slots=3"},
		{job.ConfigWorker, "slots=3"}, // The same: no reload.
		{job.ConfigDispatcher, "queue-wait=1m"},
		{job.ConfigWorker, "slots=4"},
	} {
		if _, err := kv.PutString(ctx, put.key, put.text); err != nil {
			t.Fatal(err)
		}
	}
	c.wait(t, "signal: slots=2", "shared settings: slots=3", "shared settings: slots=4")
	if err := kv.Delete(ctx, job.ConfigWorker); err != nil {
		t.Fatal(err)
	}
	c.wait(t, "signal: slots=2", "shared settings: slots=3", "shared settings: slots=4", "shared settings: ")
	signal <- struct{}{}
	c.wait(t, "signal: slots=2", "shared settings: slots=3", "shared settings: slots=4", "shared settings: ", "signal: ")
}

// TestWatcherStartsLater: a watch that could not start (here: its context
// ended) is started again by Run, which then applies the entry.
func TestWatcherStartsLater(t *testing.T) {
	kv := bucket(t)
	dead, cancel := context.WithCancel(t.Context())
	cancel()
	w, text, err := reload.Watch(dead, kv, job.ConfigDispatcher)
	if err == nil || w == nil || text != "" {
		t.Fatalf("Watch on an ended context: %v, %q, %v; want an error and a watcher", w, text, err)
	}
	if _, err := kv.PutString(t.Context(), job.ConfigDispatcher, "max-queued=9"); err != nil {
		t.Fatal(err)
	}
	var c calls
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, nil, c.apply, func(err error) { t.Errorf("onError: %v", err) })
	}()
	defer func() { stop(); <-done }()
	c.wait(t, "shared settings: max-queued=9")
}
