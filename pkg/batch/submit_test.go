package batch_test

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

// TestBadInput covers the files Submit refuses or trims. Nothing is queued
// for a refused file; for a trimmed one, the bad lines are reported with
// their numbers and the rest is queued.
func TestBadInput(t *testing.T) {
	good := generateLines(3)
	tests := []struct {
		name     string
		lines    []string
		opts     batch.SubmitOptions
		wantErr  error
		reported []int // line numbers reported
		queued   int
	}{
		{name: "repeated custom_id", lines: append(append([]string{}, good...), good[1]), wantErr: batch.ErrDuplicateIDs, reported: []int{4}},
		{name: "strict with an unknown route", lines: append([]string{good[0], `{"custom_id":"x","url":"/api/pull","body":{"model":"m"}}`}, good[1:]...),
			opts: batch.SubmitOptions{Strict: true}, wantErr: batch.ErrInvalidLines, reported: []int{2}},
		{name: "bad lines skipped", lines: append([]string{good[0], `{"url":"/api/generate","body":{"model":"m"}}`, `{oops`}, good[1:]...),
			reported: []int{2, 3}, queued: 3},
		{name: "nothing valid", lines: []string{`{oops`, ``}, wantErr: batch.ErrEmpty, reported: []int{1}},
		{name: "bad ID", lines: good, opts: batch.SubmitOptions{ID: "a.b"}, wantErr: errors.New("must be 1 to 64")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, c := queueOnly(t)
			var reported []int
			tt.opts.Report = func(le *batch.LineError) { reported = append(reported, le.Line) }
			sub, err := c.Submit(t.Context(), source(tt.lines), tt.opts)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Submit: %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr) && (err == nil || !strings.Contains(err.Error(), tt.wantErr.Error())):
				t.Fatalf("Submit error = %v, want %v", err, tt.wantErr)
			}
			if fmt.Sprint(reported) != fmt.Sprint(tt.reported) {
				t.Errorf("reported lines %v, want %v", reported, tt.reported)
			}
			if n := storedJobs(t, q); n != tt.queued {
				t.Errorf("%d jobs queued, want %d", n, tt.queued)
			}
			if tt.wantErr != nil {
				if all, err := c.List(t.Context()); err != nil || len(all) != 0 {
					t.Errorf("a refused file left %d batch records (%v)", len(all), err)
				}
				return
			}
			if sub.Record.Invalid != len(tt.reported) || len(sub.Record.Errors) != len(tt.reported) {
				t.Errorf("record counts %d invalid with %d errors, want %d", sub.Record.Invalid, len(sub.Record.Errors), len(tt.reported))
			}
		})
	}
}

// TestSubmitAgain submits a file twice, and another file under the first
// one's ID: the same file queues nothing new, another file is refused.
func TestSubmitAgain(t *testing.T) {
	q, c := queueOnly(t)
	first := submit(t, c, source(generateLines(50)), batch.SubmitOptions{Name: "a.jsonl"})
	again := submit(t, c, source(generateLines(50)), batch.SubmitOptions{Name: "a.jsonl"})
	if again.Created || again.Queued != 0 || again.Record.ID != first.Record.ID || storedJobs(t, q) != 50 {
		t.Errorf("second submission: created %v, queued %d, ID %s (first %s), %d jobs in the stream",
			again.Created, again.Queued, again.Record.ID, first.Record.ID, storedJobs(t, q))
	}
	_, err := c.Submit(t.Context(), source(generateLines(51)), batch.SubmitOptions{ID: first.Record.ID})
	if !errors.Is(err, batch.ErrConflict) {
		t.Errorf("another file under the same ID: %v, want ErrConflict", err)
	}
	if _, err := c.Status(t.Context(), "batch_nope"); !errors.Is(err, batch.ErrNotFound) {
		t.Errorf("Status of an unknown batch: %v, want ErrNotFound", err)
	}
}

// TestLargeFileInBoundedMemory reads a 100,000-line file (about 20 MB) the
// way Submit does before it queues anything, and checks that the heap grows
// by a fraction of the file: a hash per custom_id and one line at a time.
// (Queuing reuses the reader and keeps at most a window of 256 lines in
// flight; measuring it here would measure the in-process nats-server, which
// keeps what it stores.)
func TestLargeFileInBoundedMemory(t *testing.T) {
	const lines = 100_000
	prompt := strings.Repeat("lorem ipsum ", 8)
	size := 0
	src := func() (io.ReadCloser, error) {
		size = 0
		return &generated{n: lines, line: func(i int) string {
			l := fmt.Sprintf(`{"custom_id":"r%d","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"%s %d"}}`+"\n", i, prompt, i)
			size += len(l)
			return l
		}}, nil
	}
	peak := sampleHeap(t)
	start := time.Now()
	sc, err := batch.Check(t.Context(), src, 1<<20, nil, nil)
	grew := peak()
	if err != nil || sc.Requests != lines {
		t.Fatalf("Check = %d requests, %v; want %d", sc.Requests, err, lines)
	}
	t.Logf("%d lines (%d MB) in %s; the heap grew by at most %.1f MB", lines, size>>20, time.Since(start).Round(time.Millisecond), float64(grew)/(1<<20))
	// What Check keeps: a hash per custom_id (8 bytes, and the line's
	// number, 4) in a map, whose overhead and growth (old and new tables
	// live at once) make it about 48 bytes a line at worst, and one line at a
	// time (64 KiB of buffer, lines up to maxBody). Not the file. (Twice
	// that under the race detector: raceSlack.)
	if bound := uint64(lines*48+2<<20) * raceSlack; grew > bound || grew > uint64(size)/2*raceSlack {
		t.Errorf("the heap grew by %.1f MB while reading a %d MB file of %d lines, want at most %.1f MB", float64(grew)/(1<<20), size>>20, lines, float64(bound)/(1<<20))
	}
}

// generated is a file of n lines made up as it is read.
type generated struct {
	n, i int
	line func(int) string
	buf  []byte
}

func (g *generated) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.i == g.n {
			return 0, io.EOF
		}
		g.buf = []byte(g.line(g.i))
		g.i++
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func (g *generated) Close() error { return nil }

// sampleHeap measures the live heap (after a collection) every few
// milliseconds; the returned func stops and returns how far it rose above
// where it started.
func sampleHeap(t *testing.T) func() uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() uint64 {
		runtime.GC()
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	base := read()
	var high atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if v := read(); v > high.Load() {
				high.Store(v)
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		if h := high.Load(); h > base {
			return h - base
		}
		return 0
	}
}
