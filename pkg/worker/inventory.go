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
		case <-rec.C:
			if w.slotsChanged.Swap(false) {
				w.putNode(ctx)
			}
			continue
		}
		w.check(ctx)
	}
}

// check asks Ollama for its inventory, binds the consumers of its models,
// updates health and writes the node record.
func (w *Worker) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, w.cfg.Heartbeat)
	inv, err := w.ollama.Inventory(cctx)
	cancel()
	if ctx.Err() != nil {
		return
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
	w.putNode(ctx)
	w.pruneCanceled()
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
		bell, err := w.nc.Subscribe(job.QueuedFilter(k.model, k.class), func(*nats.Msg) { poke(w.wake) })
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

// putNode writes the node record. A failure is logged: the next heartbeat retries.
func (w *Worker) putNode(ctx context.Context) {
	w.mu.Lock()
	n := &fleet.Node{
		ID:            w.cfg.ID,
		State:         fleet.StateReady,
		OllamaURL:     w.cfg.Ollama.String(),
		Labels:        w.cfg.Labels,
		OllamaVersion: w.inventory.Version,
		Models:        w.inventory.Models,
		Loaded:        w.inventory.Loaded,
		SlotsTotal:    w.cfg.Slots,
		SlotsBusy:     int(w.busy.Load()),
		SlotsPeak:     int(w.peak.Load()),
		JobsDone:      w.jobsDone.Load(),
		JobsFailed:    w.failed.Load(),
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
	if err := fleet.Put(ctx, w.q.JetStream(), n, fleet.RecordTTL(w.cfg.Heartbeat)); err != nil && ctx.Err() == nil {
		w.log.Warn("write node record", "err", err)
	}
}

func (w *Worker) pruneCanceled() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.canceled.prune(time.Now())
}
