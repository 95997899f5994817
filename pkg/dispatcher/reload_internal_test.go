package dispatcher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBodyBudgetResize changes the bound while bodies are held and waiting,
// as a reload does: a larger one lets waiting bodies in at once, a smaller
// one keeps new bodies out until the held ones fit it, and none of what is
// held is taken away.
func TestBodyBudgetResize(t *testing.T) {
	const mib = 1 << 20
	b := newBodyBudget(2*mib, prometheus.NewRegistry())
	t.Cleanup(b.close)
	ctx := t.Context()
	quick := func(n int64) (*bodyHold, error) {
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		return b.take(ctx, n)
	}
	taken := func(n int64) <-chan *bodyHold {
		c := make(chan *bodyHold, 1)
		go func() {
			h, err := b.take(ctx, n)
			if err != nil {
				close(c)
				return
			}
			c <- h
		}()
		return c
	}

	first, err := quick(2 * mib)
	if err != nil {
		t.Fatal(err)
	}
	waiting := taken(mib)
	until(t, "a body waiting", func() bool { return b.waiting.Load() == 1 })
	b.resize(3 * mib) // Larger: the waiting body fits now.
	var second *bodyHold
	select {
	case second = <-waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("a body waiting under the old bound did not go when the bound grew")
	}

	b.resize(mib) // Smaller than the 3 MiB held: nothing more until they fit.
	if _, err := quick(smallBody + 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a body after the bound shrank below what is held: err %v, want it to wait", err)
	}
	if got, want := b.held.Load(), int64(3*mib); got != want {
		t.Errorf("held %d after the bound shrank, want the %d held before", got, want)
	}
	third := taken(mib)
	first.release()
	select {
	case <-third:
		t.Fatal("a body went while 1 MiB was held under a bound of 1 MiB")
	case <-time.After(50 * time.Millisecond):
	}
	second.release()
	select {
	case h := <-third:
		if h == nil {
			t.Fatal("the body waiting for the smaller bound failed")
		}
		if _, err := quick(smallBody + 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a second body beside one holding the whole smaller bound: err %v, want it to wait", err)
		}
		h.release()
	case <-time.After(5 * time.Second):
		t.Fatal("a body did not go once the held bodies fit the smaller bound")
	}

	b.resize(-1) // No bound.
	h, err := quick(8 * mib)
	if err != nil {
		t.Fatalf("no bound: %v", err)
	}
	b.resize(2 * mib) // A bound again, with the unbounded body still held outside it.
	if _, err := quick(2 * mib); err != nil {
		t.Errorf("the whole new bound, beside a body taken without one: %v", err)
	}
	h.release()
	if got := b.limit.Load(); got != 2*mib {
		t.Errorf("limit %d, want %d", got, 2*mib)
	}
}

// TestBodyBudgetCloseEndsTakingBack stops a dispatcher while a shrunk bound
// still waits for held bodies: close returns.
func TestBodyBudgetCloseEndsTakingBack(t *testing.T) {
	b := newBodyBudget(4<<20, prometheus.NewRegistry())
	h, err := b.take(t.Context(), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	b.resize(1 << 20)
	closed := make(chan struct{})
	go func() { b.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not return while a shrunk bound waited")
	}
	h.release()
}
