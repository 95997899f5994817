package worker

import (
	"maps"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The node record's counts per model (fleet.Counts), from which ollamaq top
// computes jobs and tokens per second and model loads. They are guarded by
// w.mu, as the record's other fields are.

// countLocked applies f to the counts of model, with w.mu held.
func (w *Worker) countLocked(model string, f func(*fleet.Counts)) {
	if model == "" {
		return // A job whose subject did not parse.
	}
	if w.counts == nil {
		w.counts = map[string]fleet.Counts{}
	}
	c := w.counts[model]
	f(&c)
	w.counts[model] = c
}

// count applies f to the counts of model.
func (w *Worker) count(model string, f func(*fleet.Counts)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.countLocked(model, f)
}

// countDone counts a job of model answered in full.
func (w *Worker) countDone(model string) { w.count(model, func(c *fleet.Counts) { c.Jobs++ }) }

// countFailed counts a job of model ended with an error.
func (w *Worker) countFailed(model string) { w.count(model, func(c *fleet.Counts) { c.Failed++ }) }

// countTokens counts n tokens generated for model.
func (w *Worker) countTokens(model string, n int) {
	w.count(model, func(c *fleet.Counts) { c.Tokens += int64(n) })
}

// countLoadLocked counts a load of model if a job of it starting now finds
// it neither in Ollama's loaded models, as last seen, nor run by another
// job here (which loads it, or found it loaded). A job that loads its model
// has the inventory looked at again when it ends (settle.go), so the next
// job sees it. It is called with w.mu held, before the job joins running.
func (w *Worker) countLoadLocked(model string) {
	for _, m := range w.inventory.Loaded {
		if c, err := job.CanonicalModel(m.Model); err == nil && c == model {
			return
		}
	}
	for _, t := range w.running {
		if t.model == model {
			return
		}
	}
	w.countLocked(model, func(c *fleet.Counts) { c.Loads++ })
}

// countsLocked copies the counts for the node record, with w.mu held.
func (w *Worker) countsLocked() map[string]fleet.Counts {
	if len(w.counts) == 0 {
		return nil
	}
	return maps.Clone(w.counts)
}
