package worker

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// schedule is the only place that takes jobs from JetStream. It pulls at
// most as many jobs as slots are free (Slots, which a reload may change,
// less the jobs running), all interactive work first, each time a job is
// queued (doorbell), a slot frees up or the slots change, or the poll timer
// fires. It returns when ctx is done.
func (w *Worker) schedule(ctx context.Context, start func(jetstream.Msg)) {
	poll := time.NewTicker(w.cfg.Poll)
	defer poll.Stop()
	// A doorbell can ring a moment before its job can be fetched; a round
	// that a doorbell started and that found nothing is tried once more,
	// shortly, instead of leaving the job to the next poll.
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	// Under warm-first scheduling, a job of a model this worker would have
	// to load may become its to take after a while (warm.go).
	cold := time.NewTimer(time.Hour)
	cold.Stop()
	rotate := 0
	for {
		rang := false
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
			rang = true
		case <-recheck.C:
		case <-cold.C:
		case <-poll.C:
		case <-w.released:
		}
		// Fewer slots than jobs running (a reload lowered them): none free
		// until enough jobs end.
		free := int(w.slots.Load() - w.busy.Load())
		if free <= 0 || !w.pulling() {
			continue
		}
		rotate++
		took := w.fill(ctx, free, rotate, start)
		if rang && took == 0 {
			recheck.Reset(25 * time.Millisecond)
		}
		if at := w.takeColdNext(); !at.IsZero() {
			cold.Reset(max(time.Until(at), 0) + 5*time.Millisecond)
		}
	}
}

// pulling reports whether the worker should take jobs now.
func (w *Worker) pulling() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthy && !w.draining && !w.breaker.open(time.Now())
}

// fill pulls up to free jobs without waiting, interactive consumers first,
// then async, then batch, and starts each; the lanes below interactive get
// no more than the slots the interactive reserve leaves them (reserve.go). The consumers of a class are visited from a rotating offset so
// no model starves another; under warm-first scheduling (Config.ColdAfter,
// warm.go) those of the models loaded here come first, and those of models
// it would have to load only when their time has come. It returns how many
// jobs it started.
func (w *Worker) fill(ctx context.Context, free, rotate int, start func(jetstream.Msg)) int {
	took := 0
	for _, class := range job.Classes {
		cons := w.consumers(class)
		if len(cons) == 0 {
			continue
		}
		rotated := make([]jetstream.Consumer, len(cons))
		for i := range cons {
			rotated[i] = cons[(i+rotate)%len(cons)]
		}
		if w.cfg.ColdAfter > 0 {
			rotated = w.order(ctx, rotated)
		}
		for _, c := range rotated {
			if took == free || ctx.Err() != nil {
				return took
			}
			n := free - took
			if class != job.Interactive {
				n = min(n, w.lowRoom()) // The interactive reserve (reserve.go).
			}
			if n == 0 {
				break
			}
			took += w.pullFrom(c, n, start)
		}
	}
	return took
}

// pullFrom takes up to n jobs from one consumer and starts each, in pulls
// that never bring more than the fetch budget (Config.FetchBytes): a pull
// for 16 jobs of 8 MiB would flood the connection that carries this
// worker's replies, heartbeats and resume questions, and the server would
// cut it as a slow consumer (docs/operations.md, "Large requests").
//
// The first pull asks, without waiting, for as many jobs as fit the budget
// if each were as large as the connection carries. Its last job tells how
// many more the consumer holds; if the slots want more than that first
// pull could ask for, the next pulls ask for them with the server capping
// the bytes. Such a pull cannot ask not to wait (nats.go has no byte cap
// without a wait), so it asks only for jobs the consumer holds, and waits
// (fetchWait) only when another worker took them first.
func (w *Worker) pullFrom(c jetstream.Consumer, n int, start func(jetstream.Msg)) int {
	took := 0
	per := w.pullBatch()
	budget := int(w.fetchBytes()) + deliveryOverhead // A job of the largest size, with its subject and reply, always fits.
	limit := c.CachedInfo().Config.MaxRequestBatch
	pending := -1 // jobs the consumer holds beyond those taken; unknown before the first pull
	for took < n {
		want := n - took
		if limit > 0 {
			want = min(want, limit)
		}
		if pending < 0 {
			want = min(want, per)
		} else {
			want = min(want, pending)
		}
		if want == 0 {
			return took
		}
		capped := want > per
		var batch jetstream.MessageBatch
		var err error
		if capped {
			batch, err = c.Fetch(want, jetstream.FetchMaxBytes(budget), jetstream.FetchMaxWait(fetchWait))
		} else {
			batch, err = c.FetchNoWait(want)
		}
		if err != nil {
			w.log.Warn("pull jobs", "consumer", c.CachedInfo().Name, "err", err)
			return took
		}
		got, size := 0, 0
		for m := range batch.Messages() {
			got++
			size += deliverySize(m)
			if md, err := m.Metadata(); err == nil {
				pending = int(min(md.NumPending, uint64(n)))
				w.waiting.taken(m.Subject(), md.Sequence.Stream) // Queue positions (position.go).
			}
			w.startedJob(m)
			start(m)
		}
		took += got
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			w.log.Warn("pull jobs", "consumer", c.CachedInfo().Name, "err", err)
			return took
		}
		switch {
		case got == 0 && capped:
			pending = -1 // Taken by another worker, or the pull expired unserved: ask as the first pull does.
		case got < want && (!capped || size+int(w.nc.MaxPayload())+deliveryOverhead <= budget):
			return took // The consumer has no more for now (the budget did not end the pull).
		}
	}
	return took
}

// fetchWait is how long a pull whose bytes the server caps waits for the
// jobs it asked for, which the consumer held a moment before: they can only
// be missing if another worker took them.
const fetchWait = 10 * time.Millisecond

// deliveryOverhead is what nats-server counts against a pull's byte cap for
// a job besides its headers and body, at most: its subject and ack reply.
const deliveryOverhead = 1024

// deliverySize is about what nats-server counted for m against a pull's
// byte cap: subject, ack reply, headers and body.
func deliverySize(m jetstream.Msg) int {
	n := len(m.Subject()) + len(m.Reply()) + len(m.Data()) + len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Headers() {
		for _, v := range vs {
			n += len(k) + len(v) + len(": \r\n")
		}
	}
	return n
}

// fetchBytes returns the fetch budget: Config.FetchBytes, and never less
// than the largest message the connection carries, so that every job fits.
func (w *Worker) fetchBytes() int64 {
	return max(cmp.Or(w.cfg.FetchBytes, DefaultFetchBytes), w.nc.MaxPayload())
}

// pullBatch returns how many jobs one pull may ask for: as many of the
// largest size the connection carries (headers and body) as fit the fetch
// budget, at least one. The jobs' subjects and ack replies, a few hundred
// bytes each, come on top.
func (w *Worker) pullBatch() int {
	return int(w.fetchBytes() / w.nc.MaxPayload())
}

// consumers returns the consumers of class for the models Ollama has, in a
// stable order, but for the models it holds off.
func (w *Worker) consumers(class job.Class) []jetstream.Consumer {
	now := time.Now()
	w.mu.Lock()
	keys := make([]consumerKey, 0, len(w.served))
	for k := range w.served {
		if until, held := w.heldOff[k]; held && now.Before(until) {
			continue // It handed a job of the model back for another worker (passon.go).
		} else if held {
			delete(w.heldOff, k)
		}
		if k.class == class {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b consumerKey) int { return strings.Compare(a.model, b.model) })
	out := make([]jetstream.Consumer, len(keys))
	for i, k := range keys {
		out[i] = w.served[k]
	}
	w.mu.Unlock()
	return out
}

// startedJob counts a job as running, notes its model (warm.go) and
// records the peak.
func (w *Worker) startedJob(m jetstream.Msg) {
	w.noteStarted(m)
	if lowLane(m) {
		w.busyLow.Add(1)
	}
	n := w.busy.Add(1)
	w.slotsChanged.Store(true)
	for {
		p := w.peak.Load()
		if n <= p || w.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// finishedJob frees the job's slot.
func (w *Worker) finishedJob(m jetstream.Msg) {
	w.noteFinished(m)
	if lowLane(m) {
		w.busyLow.Add(-1)
	}
	w.busy.Add(-1)
	w.slotsChanged.Store(true)
	poke(w.released)
}
