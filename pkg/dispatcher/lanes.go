package dispatcher

import (
	"fmt"
	"net/http"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// HeaderPriority chooses a request's lane (docs/scheduling.md, "Priority
// lanes"): interactive, async or batch. Without it a request takes its API
// key's lane (apikey.Key.Lane), else interactive. A key may ask for its
// lane or a lower one, never a higher one; without keys any lane may be
// asked for, so a forged value can at most put a request ahead of batch
// and async work, which is what an unauthenticated deployment allows
// every client anyway.
const HeaderPriority = "Ollamaq-Priority"

// lane returns the lane of r's job, or writes the refusal and returns
// false: 400 for a header that names no lane, 403 for a lane above the
// key's.
func (s *Server) lane(w http.ResponseWriter, r *http.Request, f format) (job.Class, bool) {
	floor := job.Interactive
	k, hasKey := requestKey(r)
	if hasKey && k.Lane != "" {
		floor = k.Lane
	}
	h := r.Header.Get(HeaderPriority)
	if h == "" {
		return floor, true
	}
	c, err := job.ParseClass(h)
	if err != nil {
		f.fail(w, http.StatusBadRequest, fmt.Sprintf("bad %s header %q: want %s, %s or %s", HeaderPriority, h, job.Interactive, job.Async, job.Batch))
		return "", false
	}
	if c.Rank() < floor.Rank() {
		s.metrics.refused.WithLabelValues("forbidden").Inc()
		f.refuse(w, http.StatusForbidden, fmt.Sprintf("lane %s is not allowed for API key %s: it may ask for %s or a lower lane", c, k.ID, floor))
		return "", false
	}
	return c, true
}

// laneBound returns how many jobs may wait ahead of a new job of lane c
// (in c and the lanes above it) before a request of c is refused, given
// the dispatcher's bound max (--max-queued): all of it for interactive,
// three quarters for async, half for batch. So as a model's queue fills,
// the lowest lane is refused first, and an interactive request still finds
// room after async and batch requests are turned away.
func laneBound(max int, c job.Class) uint64 {
	switch c {
	case job.Async:
		return uint64(max) * 3 / 4
	case job.Batch:
		return uint64(max) / 2
	}
	return uint64(max)
}
