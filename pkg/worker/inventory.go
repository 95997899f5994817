package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
)

// recordEvery bounds how often job starts and ends rewrite the node record
// between heartbeats, so `ollamaq nodes` shows slots in use while they are.
const recordEvery = 500 * time.Millisecond

// maintain refreshes the inventory and the node record every Heartbeat, and
// at once when a job finds Ollama unreachable; between heartbeats it rewrites
// the record when slots change. It returns when ctx is done.
func (w *Worker) maintain(ctx context.Context) {
	defer close(w.maintained)
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	rec := time.NewTicker(recordEvery)
	defer rec.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.refresh:
		case req := <-w.recordNow:
			// One look at Ollama answers every job that asked meanwhile:
			// each asked after its change was done.
			reqs := []chan uint64{req}
			for more := true; more; {
				select {
				case req := <-w.recordNow:
					reqs = append(reqs, req)
				default:
					more = false
				}
			}
			rev := w.check(ctx)
			for _, req := range reqs {
				req <- rev // Buffered: never blocks.
			}
			continue
		case <-rec.C:
			if w.slotsChanged.Swap(false) {
				w.putNode(ctx)
			}
			continue
		}
		w.check(ctx)
	}
}

// recordChange has the inventory and the node record refreshed now, after
// a job or command changed Ollama's models or which are loaded, and returns
// the record's revision for the done reply (job.Reply.Record); 0 when that
// did not happen within a heartbeat (the next heartbeat writes it).
func (w *Worker) recordChange(ctx context.Context) uint64 {
	t := time.NewTimer(w.cfg.Heartbeat)
	defer t.Stop()
	done := make(chan uint64, 1)
	select {
	case w.recordNow <- done:
	case <-w.maintained:
		return 0
	case <-t.C:
		return 0
	case <-ctx.Done():
		return 0
	}
	select {
	case rev := <-done:
		return rev
	case <-t.C:
		return 0
	case <-ctx.Done():
		return 0
	}
}

// check asks Ollama for its inventory, binds the consumers of its models,
// updates health and writes the node record, whose revision it returns (0
// when the write failed or ctx ended).
func (w *Worker) check(ctx context.Context) uint64 {
	cctx, cancel := context.WithTimeout(ctx, w.cfg.Heartbeat)
	inv, err := w.ollama.Inventory(cctx)
	cancel()
	if ctx.Err() != nil {
		return 0
	}
	w.mu.Lock()
	wasHealthy := w.healthy
	w.healthy = err == nil
	if err != nil {
		w.lastErr = err.Error()
	} else {
		w.inventory = inv
	}
	w.mu.Unlock()
	switch {
	case err != nil && wasHealthy:
		w.log.Warn("ollama stopped answering; not pulling jobs until it does", "ollama", w.cfg.Ollama.String(), "err", err)
	case err != nil && w.started.Add(w.cfg.Heartbeat/2).After(time.Now()):
		w.log.Warn("ollama does not answer; not pulling jobs until it does", "ollama", w.cfg.Ollama.String(), "err", err)
	case err == nil && !wasHealthy:
		w.log.Info("ollama answers; pulling jobs", "ollama", w.cfg.Ollama.String(), "version", inv.Version, "models", len(inv.Models))
	}
	if err == nil {
		w.bind(ctx, inv)
	}
	rev := w.putNode(ctx)
	w.pruneCanceled()
	return rev
}

// bind makes sure a consumer exists for each model and class Ollama has, and
// stops serving models Ollama no longer has.
func (w *Worker) bind(ctx context.Context, inv ollama.Inventory) {
	want := map[consumerKey]bool{}
	for _, name := range inv.ModelNames() {
		model, err := job.CanonicalModel(name)
		if err != nil {
			w.log.Warn("ignoring model with a name OllamaMax cannot route", "model", name, "err", err)
			continue
		}
		for _, class := range job.Classes {
			want[consumerKey{model, class}] = true
		}
	}
	w.mu.Lock()
	var missing []consumerKey
	for k := range want {
		if _, ok := w.served[k]; !ok {
			missing = append(missing, k)
		}
	}
	var gone []*nats.Subscription
	for k := range w.served {
		if !want[k] {
			delete(w.served, k)
			gone = append(gone, w.bells[k])
			delete(w.bells, k)
		}
	}
	w.mu.Unlock()
	for _, b := range gone {
		if err := b.Unsubscribe(); err != nil {
			w.log.Debug("unsubscribe doorbell", "subject", b.Subject, "err", err)
		}
	}
	for _, k := range missing {
		c, err := w.q.Consumer(ctx, k.model, k.class)
		if err != nil {
			w.log.Warn("bind consumer", "model", k.model, "class", k.class, "err", err)
			continue
		}
		// A doorbell per served model and class: the server sends this
		// worker only the rings it cares about.
		ring := func(*nats.Msg) { poke(w.wake) }
		if k.class == job.Interactive {
			ring = func(m *nats.Msg) { poke(w.wake); w.waiting.ring(m, time.Now()) } // For queue positions (position.go).
		}
		bell, err := w.nc.Subscribe(job.QueuedFilter(k.model, k.class), ring)
		if err != nil {
			w.log.Warn("subscribe doorbell", "model", k.model, "class", k.class, "err", err)
			continue
		}
		w.mu.Lock()
		w.served[k] = c
		w.bells[k] = bell
		w.mu.Unlock()
		w.metrics.initialize(k.model, string(k.class))
	}
	if len(missing) > 0 {
		poke(w.wake) // Jobs may already be waiting for these models.
	}
}

// putNode writes the node record and returns its revision. A failure is
// logged (and 0 returned): the next heartbeat retries.
func (w *Worker) putNode(ctx context.Context) uint64 {
	w.mu.Lock()
	n := &fleet.Node{
		ID:            w.cfg.ID,
		State:         fleet.StateReady,
		OllamaURL:     w.cfg.Ollama.String(),
		Labels:        w.labels,
		OllamaVersion: w.inventory.Version,
		Models:        w.inventory.Models,
		Loaded:        w.inventory.Loaded,
		SlotsTotal:    int(w.slots.Load()),
		SlotsBusy:     int(w.busy.Load()),
		SlotsPeak:     int(w.peak.Load()),
		SlotsReserved: w.reserved(),
		JobsDone:      w.jobsDone.Load(),
		JobsFailed:    w.failed.Load(),
		Served:        w.countsLocked(),
		LastError:     w.lastErr,
		StartedAt:     w.started,
		UpdatedAt:     time.Now().UTC(),
	}
	switch {
	case w.draining:
		n.State = fleet.StateDraining
	case !w.healthy:
		n.State = fleet.StateUnhealthy
	case w.breaker.open(time.Now()):
		n.State = fleet.StateUnhealthy
		n.LastError = w.breaker.reason
	}
	w.mu.Unlock()
	rev, err := fleet.Put(ctx, w.q.JetStream(), n, fleet.RecordTTL(w.cfg.Heartbeat))
	if err != nil && ctx.Err() == nil {
		w.log.Warn("write node record", "err", err)
	}
	return rev
}

func (w *Worker) pruneCanceled() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.canceled.prune(time.Now())
}
