package worker

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Warm-first scheduling and swap collation (docs/scheduling.md). Loading a
// model costs seconds to minutes and may evict another, so a worker takes
// the jobs of the models its Ollama has loaded first, and those of a model
// it would have to load only when the workers that have it loaded are not
// keeping up: the oldest waiting job has waited Config.ColdAfter, or the
// waiting jobs reach Config.ColdBacklog per warm slot, or no live worker
// has the model loaded at all. Among such models it loads the one whose
// oldest job has waited longest (collation: once it has taken one job of
// a model, the model counts as loaded and its queue comes first). Every
// worker decides this for itself from what JetStream already tells it:
// the consumer's info (waiting jobs, last delivered sequence), the oldest
// waiting job's timestamp (a stream message get) and the other workers'
// records in the node bucket. Nothing pushes jobs to anyone.

// DefaultColdAfter and DefaultColdBacklog are the defaults of
// Config.ColdAfter and Config.ColdBacklog.
const (
	DefaultColdAfter   = 2 * time.Second
	DefaultColdBacklog = 4
)

// startedRun is what the worker notes of a job holding a slot.
type startedRun struct {
	model string
	load  bool // its model was not loaded here when it started
}

// modelOf returns the canonical model of a job subject or consumer filter.
func modelOf(subject string) string {
	model, _, _, err := job.ParseJobSubject(subject)
	if err != nil {
		return ""
	}
	return model
}

// warmLocked returns the models this worker's Ollama has loaded, or is
// loading: those of the jobs it runs, and those /api/ps listed when it last
// looked, unless a job started since then makes Ollama load another model,
// which may evict them. w.mu is held.
func (w *Worker) warmLocked() map[string]bool {
	warm := make(map[string]bool, len(w.inModel)+len(w.inventory.Loaded))
	for model, n := range w.inModel {
		if n > 0 {
			warm[model] = true
		}
	}
	if w.loading == 0 {
		for _, l := range w.inventory.Loaded {
			if c, err := job.CanonicalModel(l.Model); err == nil {
				warm[c] = true
			}
		}
	}
	return warm
}

// noteStarted records a job that takes a slot, and counts the model load
// it causes when its model is not warm here.
func (w *Worker) noteStarted(m jetstream.Msg) {
	model := modelOf(m.Subject())
	w.mu.Lock()
	load := model != "" && !w.warmLocked()[model]
	w.jobs[m] = startedRun{model: model, load: load}
	w.inModel[model]++
	if load {
		w.loading++
	}
	w.mu.Unlock()
	if load {
		w.metrics.loads.WithLabelValues(model).Inc()
	}
}

// noteFinished forgets a job whose slot is free.
func (w *Worker) noteFinished(m jetstream.Msg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.jobs[m]
	if !ok {
		return
	}
	delete(w.jobs, m)
	if w.inModel[r.model]--; w.inModel[r.model] <= 0 {
		delete(w.inModel, r.model)
	}
	if r.load {
		w.loading--
	}
}

// coldPick is a consumer of a model not loaded here that may be pulled
// now, with the age of its oldest waiting job.
type coldPick struct {
	c   jetstream.Consumer
	age time.Duration
}

// order returns cons (visited from a rotating offset) in the order fill
// pulls them under warm-first scheduling: models no worker has loaded
// whose oldest job waited past the starvation bound, then the models
// loaded here, then the other models that may be loaded now, oldest job
// first. Models that may not be loaded yet are left out, and when the
// first of them comes of age is noted for the scheduler's timer.
func (w *Worker) order(ctx context.Context, cons []jetstream.Consumer) []jetstream.Consumer {
	w.mu.Lock()
	warm := w.warmLocked()
	w.mu.Unlock()
	var hot []jetstream.Consumer
	var starving, cold []coldPick
	var view *fleet.View
	for _, c := range cons {
		filter := c.CachedInfo().Config.FilterSubject
		model := modelOf(filter)
		if warm[model] {
			hot = append(hot, c)
			continue
		}
		if view == nil {
			view = w.peers.peek()
		}
		pick, ok, starve, at := w.coldLook(ctx, c, filter, w.warmSlots(view, model))
		switch {
		case starve:
			starving = append(starving, pick)
		case ok:
			cold = append(cold, pick)
		case !at.IsZero():
			w.mu.Lock()
			if w.coldNext.IsZero() || at.Before(w.coldNext) {
				w.coldNext = at
			}
			w.mu.Unlock()
		}
	}
	oldest := func(a, b coldPick) int { return cmp.Compare(b.age, a.age) }
	slices.SortStableFunc(starving, oldest)
	slices.SortStableFunc(cold, oldest)
	out := make([]jetstream.Consumer, 0, len(cons))
	for _, p := range starving {
		out = append(out, p.c)
	}
	out = append(out, hot...)
	for _, p := range cold {
		out = append(out, p.c)
	}
	return out
}

// coldLookTimeout bounds the JetStream round trips of one coldLook.
const coldLookTimeout = 2 * time.Second

// coldLook decides whether this worker may pull now from c, a consumer of a
// model its Ollama does not have loaded, which warmSlots slots of live
// workers have loaded (-1: unknown, the node view is not ready yet). ok:
// it may, after the warm work; starve: it should, before the warm work; at:
// when it may, if it is only a matter of time. When JetStream does not
// answer, it may: a worker that cannot tell takes jobs as it always did.
func (w *Worker) coldLook(ctx context.Context, c jetstream.Consumer, filter string, warmSlots int) (pick coldPick, ok, starve bool, at time.Time) {
	pick.c = c
	ctx, cancel := context.WithTimeout(ctx, coldLookTimeout)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		w.log.Debug("consumer info for warm-first scheduling", "consumer", c.CachedInfo().Name, "err", err)
		return pick, true, false, time.Time{}
	}
	if info.NumPending == 0 {
		// Nothing waits but, perhaps, redeliveries, which workers that
		// have the model loaded take; if none has, this one may.
		return pick, warmSlots <= 0, false, time.Time{}
	}
	stream, err := w.jobStream(ctx)
	if err != nil {
		return pick, true, false, time.Time{}
	}
	// The consumer delivers in stream order: the oldest job not yet
	// delivered is the first of its subjects after the last delivered.
	msg, err := stream.GetMsg(ctx, info.Delivered.Stream+1, jetstream.WithGetMsgSubject(filter))
	if err != nil {
		w.log.Debug("oldest waiting job for warm-first scheduling", "consumer", info.Name, "err", err)
		return pick, true, false, time.Time{}
	}
	pick.age = time.Since(msg.Time)
	if warmSlots <= 0 {
		return pick, true, pick.age >= w.starveAfter(), time.Time{}
	}
	if pick.age >= w.cfg.ColdAfter {
		return pick, true, false, time.Time{}
	}
	if w.cfg.ColdBacklog > 0 && info.NumPending >= uint64(w.cfg.ColdBacklog*warmSlots) {
		return pick, true, false, time.Time{}
	}
	return pick, false, false, msg.Time.Add(w.cfg.ColdAfter)
}

// starveAfter is Config.StarveAfter, or its default.
func (w *Worker) starveAfter() time.Duration {
	if w.cfg.StarveAfter > 0 {
		return w.cfg.StarveAfter
	}
	return 5 * w.cfg.ColdAfter
}

// warmSlots counts the slots of the other live, ready workers whose records
// say their Ollama has model loaded; -1 without a view.
func (w *Worker) warmSlots(v *fleet.View, model string) int {
	if v == nil {
		return -1
	}
	n := 0
	for _, node := range v.Nodes() {
		if node.ID != w.cfg.ID && node.State == fleet.StateReady && node.IsLoaded(model) {
			n += max(node.SlotsTotal, 1)
		}
	}
	return n
}

// jobStream returns the job stream, bound on first use.
func (w *Worker) jobStream(ctx context.Context) (jetstream.Stream, error) {
	w.mu.Lock()
	s := w.stream
	w.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := w.q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.stream = s
	w.mu.Unlock()
	return s, nil
}

// takeColdNext returns and clears when the first cold model comes of age.
func (w *Worker) takeColdNext() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	at := w.coldNext
	w.coldNext = time.Time{}
	return at
}
