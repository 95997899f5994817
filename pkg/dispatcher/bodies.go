package dispatcher

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
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
type bodyBudget struct {
	sem     *semaphore.Weighted // nil: no bound
	limit   int64
	held    atomic.Int64 // bytes of the bodies held now, small ones too
	waiting atomic.Int64 // requests waiting for their turn
}

// newBodyBudget returns a budget of limit bytes (none if limit < 0) and
// registers its gauges with reg.
func newBodyBudget(limit int64, reg prometheus.Registerer) *bodyBudget {
	b := &bodyBudget{limit: limit}
	if limit > 0 {
		b.sem = semaphore.NewWeighted(limit)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_bytes_in_flight",
			Help: "Bytes of request bodies the dispatcher holds: being read, or queued and not yet started by a worker."},
			func() float64 { return float64(b.held.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_bytes_limit",
			Help: "The body budget: bytes of large request bodies the dispatcher holds at most (--body-budget); 0 when unbounded."},
			func() float64 { return float64(max(b.limit, 0)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_body_waiting",
			Help: "Requests with large bodies waiting, unread, for their turn under the body budget."},
			func() float64 { return float64(b.waiting.Load()) }),
	)
	return b
}

// take holds n bytes of the budget for a body, waiting while a body larger
// than smallBody does not fit, first come first served, until ctx is done.
func (b *bodyBudget) take(ctx context.Context, n int64) (*bodyHold, error) {
	h := &bodyHold{b: b, n: n}
	if b.sem != nil && n > smallBody {
		h.weighed = min(n, b.limit) // A body larger than the whole budget waits until it has it all.
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
	n := r.ContentLength
	if n < 0 || n > s.opts.MaxBody {
		n = s.opts.MaxBody // A longer body is refused with 413 once MaxBody of it is read.
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.QueueWait)
	defer cancel()
	h, err := s.bodies.take(ctx, n)
	if err != nil {
		if r.Context().Err() != nil {
			return nil, false // The client left.
		}
		s.log.Info("large request refused: the body budget stayed full", "bytes", n, "waited", time.Since(began).Round(time.Millisecond))
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(s.opts.QueueWait.Seconds()))))
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
