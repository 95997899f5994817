package dispatcher

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadAll(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	for _, c := range []struct {
		name string
		hint int64
	}{
		{"no hint", -1},
		{"zero hint", 0},
		{"exact hint", int64(len(body))},
		{"hint too small", 10},
		{"hint too large", int64(2 * len(body))},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readAll(iotest.OneByteReader(strings.NewReader(body)), c.hint)
			if err != nil || string(got) != body {
				t.Fatalf("read %d bytes, err %v; want %d bytes", len(got), err, len(body))
			}
			if c.hint == int64(len(body)) && cap(got) != len(body)+1 {
				t.Errorf("capacity %d for an exact hint, want %d: the buffer grew", cap(got), len(body)+1)
			}
		})
	}
	boom := errors.New("boom")
	if _, err := readAll(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), 3); !errors.Is(err, boom) {
		t.Errorf("err %v, want %v", err, boom)
	}
}

// until polls cond until it holds, failing the test after five seconds.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestBodyBudget(t *testing.T) {
	const limit = 1 << 20
	b := newBodyBudget(limit, prometheus.NewRegistry())
	ctx := t.Context()
	quick := func(n int64) (*bodyHold, error) {
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		return b.take(ctx, n)
	}

	big, err := quick(limit / 2)
	if err != nil {
		t.Fatal(err)
	}
	second, err := quick(limit / 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quick(smallBody + 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a large body past the budget: err %v, want to wait", err)
	}
	small, err := quick(smallBody)
	if err != nil {
		t.Fatalf("a small body past the budget: %v, want it held at once", err)
	}
	if got, want := b.held.Load(), int64(limit+smallBody); got != want {
		t.Errorf("held %d, want %d", got, want)
	}

	// First come, first served: a waiting body is not overtaken by a later
	// one that would fit.
	order := make(chan string, 2)
	letGo := make(chan struct{})
	waitFor := func(name string, n int64) {
		go func() {
			h, err := b.take(ctx, n)
			if err != nil {
				order <- "error " + err.Error()
				return
			}
			order <- name
			<-letGo
			h.release()
		}()
	}
	waitFor("whole budget", limit)
	until(t, "one waiting", func() bool { return b.waiting.Load() == 1 })
	waitFor("quarter", limit/4)
	until(t, "two waiting", func() bool { return b.waiting.Load() == 2 })
	second.shrink(limit / 4) // The body turned out smaller: room for the quarter, but the whole budget waits first.
	select {
	case got := <-order:
		t.Fatalf("%s went ahead of the body waiting before it", got)
	case <-time.After(50 * time.Millisecond):
	}
	big.release()
	second.release()
	second.release() // Idempotent.
	if got := <-order; got != "whole budget" {
		t.Fatalf("first to go: %s, want the whole budget", got)
	}
	small.release()
	if got := b.held.Load(); got != limit {
		t.Errorf("held %d while the whole budget is held, want %d", got, limit)
	}
	close(letGo)
	if got := <-order; got != "quarter" {
		t.Fatalf("second to go: %s, want the quarter", got)
	}
	until(t, "nothing held", func() bool { return b.held.Load() == 0 })

	// A body larger than the budget goes once it has the budget to itself.
	huge, err := quick(8 * limit)
	if err != nil {
		t.Fatalf("a body larger than the budget, alone: %v", err)
	}
	if _, err := quick(smallBody + 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a large body beside one larger than the budget: err %v, want to wait", err)
	}
	huge.release()

	unbounded := newBodyBudget(-1, prometheus.NewRegistry())
	if _, err := unbounded.take(ctx, 8*limit); err != nil {
		t.Errorf("no bound: %v", err)
	}
}
