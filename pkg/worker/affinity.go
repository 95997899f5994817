package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Session affinity (docs/scheduling.md): a job whose requester names the
// worker that served its session's previous turn (job.HeaderPrefer) runs
// there if it can, because that worker's Ollama still holds the
// conversation in its prompt cache. Workers pull and nobody pushes: a
// worker that fetches such a job for another worker, on one of its first
// deliveries (affinityDeliveries), while the job is younger than
// Config.AffinityWait and the node bucket
// shows the preferred worker ready with the model loaded and a free slot
// (without the model loaded it has no cache to offer), hands
// it back and rings the doorbell, and takes no job of its model for a
// moment (affinityHoldOff), so that the preferred worker takes it. That
// costs the job deliveries of its MaxDeliver, so only the first
// affinityDeliveries go back, and never one that would leave fewer than
// two (one to run it, one should its worker die), and each worker hands a
// job back once (leftJobs); all before anything was
// sent to the requester, which sees only the attempt number of the start
// reply change.

// affinityDeliveries is how many of a job's deliveries may go back for
// its preferred worker: two, because the first pull after a hand-back is
// a race between the preferred worker and every other idle one (each
// hands a job back once, then holds off), and the preferred worker is
// often a few milliseconds from free, acknowledging the previous turn,
// when the next arrives.
const affinityDeliveries = 2

// DefaultAffinityWait is the default of Config.AffinityWait.
const DefaultAffinityWait = 500 * time.Millisecond

// affinityHoldOff is how long a worker that handed a job back for its
// preferred worker takes no job of its model (at most Config.AffinityWait):
// time enough for the preferred worker's doorbell and pull, a few
// milliseconds, short enough that this worker's other jobs of the model
// barely notice. Should the preferred worker not take it meanwhile, this
// worker, or any other, takes it then.
const affinityHoldOff = 50 * time.Millisecond

// maxLeftJobs bounds the jobs a worker remembers having handed back: each
// is forgotten after Config.AffinityWait, when no job of its age goes back
// anyway; at the bound the worker hands none back until some are.
const maxLeftJobs = 1024

// leftJobs are the jobs a worker handed back for their preferred worker,
// by ID, with when; guarded by Worker.mu.
type leftJobs map[string]time.Time

// leftLocked tells whether the worker handed job id back already.
func (w *Worker) leftLocked(id string) bool {
	_, ok := w.left[id]
	return ok
}

// noteLeftLocked remembers that the worker handed job id back, and
// forgets those handed back longer ago than Config.AffinityWait. It
// reports false, remembering nothing, at the bound.
func (w *Worker) noteLeftLocked(id string, now time.Time) bool {
	for k, at := range w.left {
		if now.Sub(at) >= w.cfg.AffinityWait {
			delete(w.left, k)
		}
	}
	if len(w.left) >= maxLeftJobs {
		return false
	}
	w.left[id] = now
	return true
}

// leaveToPreferred decides whether t, a delivered job that is valid and
// due, goes back to the queue for the worker it prefers: ok=false runs it
// here.
func (w *Worker) leaveToPreferred(ctx context.Context, t *task) (result, bool) {
	prefer := t.msg.Headers().Get(job.HeaderPrefer)
	if w.cfg.AffinityWait <= 0 || prefer == "" || prefer == w.cfg.ID || t.attempt > affinityDeliveries || t.attempt > w.q.MaxDeliver()-2 {
		return result{}, false
	}
	md, err := t.msg.Metadata()
	if err != nil || time.Since(md.Timestamp) >= w.cfg.AffinityWait {
		return result{}, false
	}
	v := w.peers.get(ctx)
	if v == nil {
		return result{}, false
	}
	n, rev := v.Node(prefer)
	ended, _ := strconv.ParseUint(t.msg.Headers().Get(job.HeaderPreferRecord), 10, 64) // Not a number: unknown, 0.
	if !canTake(n, rev, ended, t.model) {
		return result{}, false
	}
	w.mu.Lock()
	again := w.leftLocked(t.id) || !w.noteLeftLocked(t.id, time.Now())
	w.mu.Unlock()
	if again {
		return result{}, false // Nobody took it while this worker held off: it runs here.
	}
	return result{kind: resAffinity, msg: "left to " + prefer + ", which served the session's previous turn"}, true
}

// canTake tells whether node n, whose record is at revision rev, would
// take a job of model and have its prompt cache: it is ready, has the
// model loaded and a free slot. A
// record still at revision ended, where the session's previous turn ended
// (job.HeaderPreferRecord), may count that turn's slot as busy, though it
// is free (records follow slot changes about every recordEvery): its
// busy slots do not count against it.
func canTake(n *fleet.Node, rev, ended uint64, model string) bool {
	if n == nil || n.State != fleet.StateReady || !n.IsLoaded(model) {
		return false
	}
	return n.SlotsBusy < max(n.SlotsTotal, 1) || (ended != 0 && rev == ended)
}

// leaveFor settles a job handed back for its preferred worker: NAK for
// immediate redelivery, the model held off for affinityHoldOff, the
// doorbell rung so that the preferred worker pulls now, and a look again
// when the hold-off ends, should it not have.
func (t *task) leaveFor(r result) error {
	w := t.w
	until := time.Now().Add(min(w.cfg.AffinityWait, affinityHoldOff))
	w.holdOff(consumerKey{t.model, t.class}, until)
	w.mu.Lock()
	if w.coldNext.IsZero() || until.Before(w.coldNext) {
		w.coldNext = until // The scheduler's timer (pull.go) brings this worker back then.
	}
	w.mu.Unlock()
	if err := t.msg.Nak(); err != nil {
		return err
	}
	if err := w.nc.Publish(job.QueuedSubject(t.model, t.class, t.requester), nil); err != nil {
		w.log.Debug("ring the doorbell", "err", err)
	}
	w.metrics.leftToPreferred.WithLabelValues(t.model, string(t.class)).Inc()
	w.log.Debug("job left to its preferred worker", "job", t.id, "why", r.msg)
	return nil
}
