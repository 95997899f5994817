package worker

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Mixed fleets (docs/protocol.md): a job for a route this worker's Ollama
// lacks (/v1/messages on a 0.12, say) is left to a worker whose Ollama has
// it, or answered as this Ollama would. Workers pull and nobody pushes: the
// worker hands the job back to the queue, rings the model's doorbell so
// that the others look at once, and takes no job of that model for a
// moment, so that a worker whose Ollama has the route, if it has a free
// slot, takes it next. Each hand-back is a delivery of the job's
// MaxDeliver: later ones wait longer (passOnDelay), in case the workers
// that have the route are busy, and the last delivery never goes back,
// for JetStream would give the job up. A job no other worker could run (the
// node bucket shows no other ready worker with the model and the route)
// goes to this worker's Ollama, which answers what it answers to such a
// route.

// passOnDelay is how long a job handed back on its attempt-th delivery
// waits before its next: none the first time (the doorbell brings the
// others), then poll, 2*poll, 4*poll.
func passOnDelay(poll time.Duration, attempt int) time.Duration {
	if attempt < 2 {
		return 0
	}
	return poll << min(attempt-2, 5)
}

// holdOffFor is how long a worker that handed a job back takes no job of
// its model: until the job is available again, and a poll longer, so that
// every other worker's poll, at least, comes first.
func holdOffFor(poll time.Duration, attempt int) time.Duration {
	return passOnDelay(poll, attempt) + poll + poll/4
}

// passOn decides a delivered job t for route rt, which is valid and due:
// ok=false lets it run here; otherwise the result hands it to the queue
// for another worker (resPassOn), or, on its last delivery, fails it.
func (w *Worker) passOn(ctx context.Context, t *task, rt job.Route) (result, bool) {
	version := w.ollamaVersion()
	if rt.In(version) {
		return result{}, false
	}
	v := w.peers.get(ctx)
	if v == nil || !w.peerHas(v, t.model, rt) {
		return result{}, false // This Ollama answers, as it would without OllamaMax.
	}
	if t.attempt >= w.q.MaxDeliver() {
		return failed(http.StatusServiceUnavailable, fmt.Sprintf(
			"no worker whose Ollama has %s took the job in %d deliveries (they were busy; this worker's Ollama %s does not have the route): try again",
			rt.Path, t.attempt, version)), true
	}
	return result{kind: resPassOn, msg: fmt.Sprintf("Ollama %s has no %s", version, rt.Path)}, true
}

// peerHas tells whether another ready worker in v has the model and an
// Ollama with the route.
func (w *Worker) peerHas(v *fleet.View, model string, rt job.Route) bool {
	for _, n := range v.Nodes() {
		if n.ID != w.cfg.ID && n.State == fleet.StateReady && n.HasModel(model) && rt.In(n.OllamaVersion) {
			return true
		}
	}
	return false
}

// ollamaVersion is the version this worker's Ollama last reported.
func (w *Worker) ollamaVersion() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inventory.Version
}

// holdOff makes the worker take no job of model and class until until.
func (w *Worker) holdOff(k consumerKey, until time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if until.After(w.heldOff[k]) {
		w.heldOff[k] = until
	}
}
