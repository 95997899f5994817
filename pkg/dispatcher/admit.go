package dispatcher

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// HeaderQueueFullWait lets a client choose, per request, how long to wait for
// room when its model's queue is full (a Go duration such as "30s"; "0"
// refuses at once). Without it the dispatcher's default applies.
const HeaderQueueFullWait = "Ollamaq-Queue-Full-Wait"

// busyMessage is Ollama's own answer when its queue is full (two spaces).
const busyMessage = "server busy, please try again.  maximum pending requests exceeded"

// pendingCache remembers each model's queue depth briefly, so admission costs
// a JetStream round trip per model every 50ms at most, not one per request.
type pendingCache struct {
	mu   sync.Mutex
	seen map[string]pendingEntry
}

type pendingEntry struct {
	n  uint64
	at time.Time
}

const pendingTTL = 50 * time.Millisecond

// pending returns how many interactive jobs wait for model, across the fleet.
// The lock is held across the refresh, so concurrent requests neither fetch
// twice nor overwrite each other's count of what they just queued.
// A cached count is refreshed when older than pendingTTL, or when fresh is
// set: a request is refused only on the server's own count, since the cache
// also counts jobs this dispatcher queued that a worker may have taken since.
func (s *Server) pending(ctx context.Context, model string, fresh bool) (uint64, error) {
	s.depth.mu.Lock()
	defer s.depth.mu.Unlock()
	if e, ok := s.depth.seen[model]; ok && !fresh && time.Since(e.at) < pendingTTL {
		return e.n, nil
	}
	c, err := s.q.JetStream().Consumer(ctx, job.Stream, job.ConsumerName(model, job.Interactive))
	if err != nil {
		return 0, err
	}
	n := c.CachedInfo().NumPending
	if s.depth.seen == nil {
		s.depth.seen = map[string]pendingEntry{}
	}
	s.depth.seen[model] = pendingEntry{n, time.Now()}
	return n, nil
}

// queued counts a job this dispatcher just queued into the cached depth, so
// its own burst of requests sees the queue fill without waiting for a refresh.
func (s *Server) queued(model string) {
	s.depth.mu.Lock()
	defer s.depth.mu.Unlock()
	if e, ok := s.depth.seen[model]; ok {
		e.n++
		s.depth.seen[model] = e
	}
}

// admit applies the per-model bound on queued interactive jobs. When the
// queue is full it waits for room as long as the request allows (header, else
// the default), then refuses with 503 and Retry-After as Ollama does. It
// writes the refusal itself and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, f format, model string) bool {
	lv := s.live()
	if lv.MaxQueued <= 0 {
		return true
	}
	wait := lv.QueueFullWait
	if h := r.Header.Get(HeaderQueueFullWait); h != "" {
		d, err := time.ParseDuration(h)
		if err != nil || d < 0 {
			f.fail(w, http.StatusBadRequest, "bad "+HeaderQueueFullWait+" header "+h+": want a duration such as 30s")
			return false
		}
		wait = min(d, lv.QueueWait)
	}
	deadline := time.Now().Add(wait)
	for fresh := false; ; fresh = true {
		n, err := s.pending(r.Context(), model, fresh)
		if err != nil || n < uint64(lv.MaxQueued) {
			return true // Without a depth to go by, let JetStream take it.
		}
		if !fresh {
			continue // Full by the cache: ask the server before refusing.
		}
		if time.Now().After(deadline) {
			w.Header().Set("Retry-After", "1")
			f.failForwarded(w, http.StatusServiceUnavailable, busyMessage)
			return false
		}
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(min(100*time.Millisecond, time.Until(deadline)+time.Millisecond)):
		}
	}
}
