package ollamasim

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Loaded models, as Ollama's scheduler (server/sched.go) keeps them:
//
//   - A request for a loaded model uses it at once, even one that is about
//     to be evicted, and holds a reference until it is answered.
//   - A request for a model that is not loaded joins the queue of loads
//     (at most MaxQueue wait; beyond that 503 "server busy"). Loads happen
//     one at a time, each taking the model's load time.
//   - At MaxLoadedModels, a load first evicts an idle model (the shortest
//     keep-alive first, then the least recently used). If none is idle, it
//     marks the one it would pick to unload when its last request ends,
//     and waits for an unload; the whole queue of loads waits with it.
//   - A model is unloaded when its keep-alive runs out while idle, after a
//     request with keep_alive 0, or when it goes from the inventory. With
//     it goes its prompt cache.
//
// /api/ps lists a model once its load is done; its expires_at is set when
// it goes idle, so a busy model shows the time its previous request set.

// residency is a loaded model, as listed by /api/ps.
type residency struct {
	expiresAt     time.Time
	keepAlive     time.Duration // of the latest request; evictions take the shortest first
	lastUsed      uint64        // Server.tick when a request last took or left it
	refs          int           // requests using the model right now
	contextLength int
	// unloadWhenIdle is set by a keep_alive 0 request, or by a load that
	// needs the room (evicting), while the model was busy.
	unloadWhenIdle bool
	evicting       bool
	cache          promptCache
}

func (s *Server) newResidency(now time.Time, keepAlive time.Duration, contextLength int) *residency {
	s.tick++
	return &residency{
		expiresAt:     now.Add(keepAlive),
		keepAlive:     keepAlive,
		lastUsed:      s.tick,
		contextLength: contextLength,
	}
}

// cacheLimit is how many tokens one cached prompt holds: the context
// length, which Ollama caps at the model's trained one.
func (r *residency) cacheLimit() int {
	return min(r.contextLength, trainedContextLength)
}

// acquireModel takes a reference on e, loading it first when it is not
// resident: it queues for the one load at a time, makes room under
// MaxLoadedModels and waits the model's load time. It fails with
// errServerBusy when MaxQueue loads are already waiting, and with the
// context error when the client goes away. The caller must release the
// residency it returns with releaseModel.
func (s *Server) acquireModel(ctx context.Context, e *entry, keepAlive time.Duration, numCtx int) (*residency, error) {
	if r := s.useResident(e, keepAlive, numCtx); r != nil {
		return r, nil
	}
	select {
	case s.loading <- struct{}{}:
	default:
		if s.loadWaiting.Add(1) > int64(s.cfg.MaxQueue) {
			s.loadWaiting.Add(-1)
			return nil, errServerBusy
		}
		select {
		case s.loading <- struct{}{}:
			s.loadWaiting.Add(-1)
		case <-ctx.Done():
			s.loadWaiting.Add(-1)
			return nil, ctx.Err()
		}
	}
	defer func() { <-s.loading }()
	for {
		if r := s.useResident(e, keepAlive, numCtx); r != nil {
			return r, nil // loaded by the request before in the queue
		}
		unloaded := s.makeRoom()
		if unloaded == nil {
			break
		}
		select {
		case <-unloaded:
		case <-ctx.Done():
			// The model marked for eviction still goes when idle, as in Ollama.
			return nil, ctx.Err()
		}
	}
	if !sleep(ctx, e.loadDuration(s.cfg.LoadDuration)) {
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.newResidency(time.Now(), keepAlive, cmp.Or(max(numCtx, 0), defaultContextLength))
	r.refs = 1
	s.loaded[e.key] = r
	s.loads.Add(1)
	return r, nil
}

// loadDuration is how long loading e takes, given the configured default.
func (e *entry) loadDuration(def time.Duration) time.Duration {
	if e.LoadDuration != 0 {
		return e.LoadDuration
	}
	return def
}

// useResident takes a reference on e if it is loaded and not expired.
func (s *Server) useResident(e *entry, keepAlive time.Duration, numCtx int) *residency {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(time.Now())
	r := s.loaded[e.key]
	if r == nil {
		return nil
	}
	s.tick++
	r.refs++
	r.keepAlive = keepAlive
	r.lastUsed = s.tick
	if numCtx > 0 {
		r.contextLength = numCtx
	}
	return r
}

// makeRoom evicts an idle model if MaxLoadedModels are loaded. It returns
// nil when there is room for one more, or else a channel closed at the
// next unload, having marked a busy model to unload when idle.
func (s *Server) makeRoom() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(time.Now())
	limit := s.cfg.MaxLoadedModels
	for limit > 0 && len(s.loaded) >= limit {
		victim := s.victimLocked()
		r := s.loaded[victim]
		if r.refs > 0 {
			r.unloadWhenIdle, r.evicting = true, true
			return s.unloaded
		}
		r.evicting = true
		s.unloadLocked(victim, true)
	}
	return nil
}

// victimLocked picks the model a load evicts, as Ollama's
// findRunnerToUnload does: sorted by keep-alive (a negative one, forever,
// last) and then, where Ollama compares file paths, by least recent use;
// the first idle one, or else the first.
func (s *Server) victimLocked() string {
	keys := make([]string, 0, len(s.loaded))
	for k := range s.loaded {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ra, rb := s.loaded[a], s.loaded[b]
		return cmp.Or(cmp.Compare(uint64(ra.keepAlive), uint64(rb.keepAlive)), cmp.Compare(ra.lastUsed, rb.lastUsed))
	})
	for _, k := range keys {
		if s.loaded[k].refs <= 0 {
			return k
		}
	}
	return keys[0]
}

// releaseModel drops a reference taken by acquireModel and restarts the
// keep-alive timer; keep_alive 0, or an unload or eviction asked for while
// the model was busy, unloads it once it is idle.
func (s *Server) releaseModel(e *entry, r *residency, keepAlive time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick++
	r.refs--
	r.lastUsed = s.tick
	r.expiresAt = time.Now().Add(keepAlive)
	if s.loaded[e.key] != r {
		return // removed from the inventory meanwhile
	}
	if r.refs <= 0 && (keepAlive == 0 || r.unloadWhenIdle) {
		s.unloadLocked(e.key, r.evicting)
	}
}

// unloadModel answers keep_alive 0 with an empty prompt: the model leaves
// /api/ps now, or when its running requests finish.
func (s *Server) unloadModel(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.loaded[e.key]
	switch {
	case r == nil:
	case r.refs > 0:
		r.unloadWhenIdle = true
	default:
		s.unloadLocked(e.key, false)
	}
}

// expireLocked unloads idle models whose keep-alive has run out.
func (s *Server) expireLocked(now time.Time) {
	for k, r := range s.loaded {
		if r.refs <= 0 && now.After(r.expiresAt) {
			s.unloadLocked(k, false)
		}
	}
}

// unloadLocked removes the model with key k, its prompt cache with it, and
// wakes the loads waiting for room. evicted counts it in Stats.Evictions.
func (s *Server) unloadLocked(k string, evicted bool) {
	if s.loaded[k] == nil {
		return
	}
	delete(s.loaded, k)
	if evicted {
		s.evictions.Add(1)
	}
	close(s.unloaded)
	s.unloaded = make(chan struct{})
}
