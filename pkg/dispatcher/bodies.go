package dispatcher

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// Large request bodies wait their turn (docs/operations.md, "Large
// requests"). A body larger than smallBody takes its bytes from the body
// budget before a byte of it is read, and gives them back when a worker
// starts its job or the request ends: the dispatcher then never holds more
// than the budget of bodies it read and queued but no worker took, however
// many clients send images at once, and never publishes more at once than
// JetStream buffers before it answers "429 too many requests". A request
// beyond the budget waits, unread, for as long as a job may wait for a
// worker (Options.QueueWait); then it gets Ollama's 503 "server busy".

// smallBody is the largest body that never waits for the budget: a chat
// turn without images. Such bodies are counted, but they do not queue
// behind large ones; the connection cap bounds how many there are.
const smallBody = 64 << 10

// DefaultBodyBudget is the default of Options.BodyBudget: eight bodies of
// the default largest size (MaxBody, 8 MiB), half of what one JetStream
// stream buffers before it refuses publishes with 429 (128 MiB, the
// server's jetstream max_buffered_size).
const DefaultBodyBudget = 64 << 20

// bodyBudget bounds the bytes of large request bodies a dispatcher holds.
// It is safe for concurrent use.
//
// A reload may change the bound (resize). The semaphore has a capacity far
// beyond any budget, and the budget keeps back all of it but the bound: a
// larger bound gives some back at once; a smaller one takes more back as
// soon as held bodies release it, in line with the bodies waiting, so that
// no body starts until the held ones fit the new bound. Bodies taken under
// the old bound keep what they hold.
type bodyBudget struct {
	sem     *semaphore.Weighted
	limit   atomic.Int64 // the bound; negative: none
	held    atomic.Int64 // bytes of the bodies held now, small ones too
	waiting atomic.Int64 // requests waiting for their turn

	mu       sync.Mutex
	semLimit int64 // the bound the semaphore's reserve stands for
	// takeBack takes n bytes back into the reserve on a goroutine of
	// reserves, which waits for held bodies to release them; stop ends
	// those waits.
	takeBack func(n int64)
	stop     context.CancelFunc
	reserves sync.WaitGroup
}

// semCapacity is the semaphore's capacity: far beyond any budget, and far
// enough below the largest int64 that resizes never overflow.
const semCapacity = 1 << 61

// newBodyBudget returns a budget of limit bytes (none if limit < 0) and
// registers its gauges with reg.
func newBodyBudget(limit int64, reg prometheus.Registerer) *bodyBudget {
	b := &bodyBudget{sem: semaphore.NewWeighted(semCapacity), semLimit: max(limit, 0)}
	ctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	b.takeBack = func(n int64) {
		b.reserves.Go(func() {
			_ = b.sem.Acquire(ctx, n) // Fails only when close cancels it: the dispatcher is stopping.
		})
	}
	b.limit.Store(limit)
	b.sem.TryAcquire(semCapacity - b.semLimit) // Always succeeds: nothing holds it yet.
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_bytes_in_flight",
			Help: "Bytes of request bodies the dispatcher holds: being read, or queued and not yet started by a worker."},
			func() float64 { return float64(b.held.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_bytes_limit",
			Help: "The body budget: bytes of large request bodies the dispatcher holds at most (--body-budget); 0 when unbounded."},
			func() float64 { return float64(max(b.limit.Load(), 0)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_waiting",
			Help: "Requests with large bodies waiting, unread, for their turn under the body budget."},
			func() float64 { return float64(b.waiting.Load()) }),
	)
	return b
}

// resize changes the bound to limit (none if negative). A smaller bound
// than the semaphore stands for is taken back on a goroutine that close
// waits for.
func (b *bodyBudget) resize(limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit.Store(limit)
	if limit < 0 {
		return // Takes skip the semaphore; it keeps the last bound for a later one.
	}
	delta := limit - b.semLimit
	b.semLimit = limit
	switch {
	case delta > 0:
		b.sem.Release(delta)
	case delta < 0 && !b.sem.TryAcquire(-delta):
		b.takeBack(-delta)
	}
}

// close ends the takings back that still wait.
func (b *bodyBudget) close() {
	b.stop()
	b.reserves.Wait()
}

// take holds n bytes of the budget for a body, waiting while a body larger
// than smallBody does not fit, first come first served, until ctx is done.
func (b *bodyBudget) take(ctx context.Context, n int64) (*bodyHold, error) {
	h := &bodyHold{b: b, n: n}
	if limit := b.limit.Load(); limit > 0 && n > smallBody {
		h.weighed = min(n, limit) // A body larger than the whole budget waits until it has it all.
		b.waiting.Add(1)
		err := b.sem.Acquire(ctx, h.weighed)
		b.waiting.Add(-1)
		if err != nil {
			return nil, err
		}
	}
	b.held.Add(n)
	return h, nil
}

// bodyHold is one request's bytes of the budget. Its methods are called from
// the request's handler goroutine only.
type bodyHold struct {
	b       *bodyBudget
	n       int64 // bytes held
	weighed int64 // of them, bytes taken from the semaphore
}

// shrink keeps only n of the held bytes: what the body turned out to have.
// A nil hold holds nothing.
func (h *bodyHold) shrink(n int64) {
	if h == nil || n >= h.n {
		return
	}
	h.b.held.Add(n - h.n)
	h.n = n
	if h.weighed > n {
		h.b.sem.Release(h.weighed - n)
		h.weighed = n
	}
}

// release gives the bytes back. It is idempotent, and does nothing on a nil hold.
func (h *bodyHold) release() {
	h.shrink(0)
}

// waitTurn holds the budget for the request's body before anything reads
// it: its Content-Length, or MaxBody when the length is not known. It waits
// at most QueueWait. It writes the refusal itself, Ollama's 503 "server
// busy" with Retry-After, and returns ok=false when the wait is over or the
// client left.
func (s *Server) waitTurn(w http.ResponseWriter, r *http.Request, f format) (*bodyHold, bool) {
	lv := s.live()
	n := r.ContentLength
	if n < 0 || n > lv.MaxBody {
		n = lv.MaxBody // A longer body is refused with 413 once MaxBody of it is read.
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), lv.QueueWait)
	defer cancel()
	h, err := s.bodies.take(ctx, n)
	if err != nil {
		if r.Context().Err() != nil {
			return nil, false // The client left.
		}
		s.log.Info("large request refused: the body budget stayed full", "bytes", n, "waited", time.Since(began).Round(time.Millisecond))
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(lv.QueueWait.Seconds()))))
		f.failForwarded(w, http.StatusServiceUnavailable, busyMessage)
		return nil, false
	}
	if waited := time.Since(began); waited > 10*time.Millisecond {
		// The server's read timeout counts from the request's arrival: the
		// body, unread while the request waited, gets it anew from now.
		if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.ReadTimeout > 0 {
			err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(srv.ReadTimeout))
			if err != nil && !errors.Is(err, http.ErrNotSupported) {
				s.log.Debug("extend the read deadline", "err", err)
			}
		}
	}
	return h, true
}

// readAll reads r to its end into one buffer of the size the request
// declared, so that an 8 MiB body is not copied again as io.ReadAll's
// buffer grows. size is a hint: a body longer than it is read all the same.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, 0, size+1) // +1: the read that sees io.EOF needs room.
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // Longer than declared: grow as io.ReadAll does.
		}
	}
}
