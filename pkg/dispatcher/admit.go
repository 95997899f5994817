package dispatcher

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	seen map[depthKey]pendingEntry // bounded by the models the fleet serves, times the lanes
}

// depthKey names a cached depth: a model's jobs in a lane and those above.
type depthKey struct {
	model string
	lane  job.Class
}

type pendingEntry struct {
	n  uint64
	at time.Time
}

const pendingTTL = 50 * time.Millisecond

// pending returns how many jobs wait for model in lane c and the lanes
// above it (those served before a new job of c), across the fleet.
// The lock is held across the refresh, so concurrent requests neither fetch
// twice nor overwrite each other's count of what they just queued.
// A cached count is refreshed when older than pendingTTL, or when fresh is
// set: a request is refused only on the server's own count, since the cache
// also counts jobs this dispatcher queued that a worker may have taken since.
func (s *Server) pending(ctx context.Context, model string, c job.Class, fresh bool) (uint64, error) {
	s.depth.mu.Lock()
	defer s.depth.mu.Unlock()
	key := depthKey{model, c}
	if e, ok := s.depth.seen[key]; ok && !fresh && time.Since(e.at) < pendingTTL {
		return e.n, nil
	}
	var n uint64
	for _, lane := range job.Classes[:c.Rank()+1] {
		cons, err := s.q.JetStream().Consumer(ctx, job.Stream, job.ConsumerName(model, lane))
		if errors.Is(err, jetstream.ErrConsumerNotFound) && lane != job.Interactive {
			continue // No worker has served the lane yet: nothing waits in it.
		}
		if err != nil {
			return 0, err
		}
		n += cons.CachedInfo().NumPending
	}
	if s.depth.seen == nil {
		s.depth.seen = map[depthKey]pendingEntry{}
	}
	s.depth.seen[key] = pendingEntry{n, time.Now()}
	return n, nil
}

// queued counts a job of lane c this dispatcher just queued into the cached
// depths it is ahead of (its own lane's and the lower lanes'), so its own
// burst of requests sees the queue fill without waiting for a refresh.
func (s *Server) queued(model string, c job.Class) {
	s.depth.mu.Lock()
	defer s.depth.mu.Unlock()
	for _, lane := range job.Classes[c.Rank():] {
		if e, ok := s.depth.seen[depthKey{model, lane}]; ok {
			e.n++
			s.depth.seen[depthKey{model, lane}] = e
		}
	}
}

// admit applies the per-model bound on queued jobs to a request of lane c
// (laneBound: the lower the lane, the sooner it is refused). When the
// queue is full it waits for room as long as the request allows (header, else
// the default), then refuses with 503 and Retry-After as Ollama does. It
// writes the refusal itself and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, f format, model string, c job.Class) bool {
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
		n, err := s.pending(r.Context(), model, c, fresh)
		if err != nil || n < laneBound(lv.MaxQueued, c) {
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
