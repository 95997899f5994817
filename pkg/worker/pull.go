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

// schedule is the only place that takes jobs from JetStream. It owns the count
// of free slots and pulls at most that many, all interactive work first, each
// time a job is queued (doorbell), a slot frees up, or the poll timer fires.
// It returns when ctx is done.
func (w *Worker) schedule(ctx context.Context, start func(jetstream.Msg)) {
	free := w.cfg.Slots
	poll := time.NewTicker(w.cfg.Poll)
	defer poll.Stop()
	// A doorbell can ring a moment before its job can be fetched; a round
	// that a doorbell started and that found nothing is tried once more,
	// shortly, instead of leaving the job to the next poll.
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	rotate := 0
	for {
		rang := false
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
			rang = true
		case <-recheck.C:
		case <-poll.C:
		case <-w.released:
			free++
		}
		for drained := false; !drained; {
			select {
			case <-w.released:
				free++
			default:
				drained = true
			}
		}
		if free == 0 || !w.pulling() {
			continue
		}
		rotate++
		took := w.fill(ctx, free, rotate, start)
		free -= took
		if rang && took == 0 {
			recheck.Reset(25 * time.Millisecond)
		}
	}
}

// pulling reports whether the worker should take jobs now.
func (w *Worker) pulling() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthy && !w.draining && !w.breaker.open(time.Now())
}

// fill pulls up to free jobs without waiting, interactive consumers first, and
// starts each. The consumers of a class are visited from a rotating offset so
// no model starves another. It returns how many jobs it started.
func (w *Worker) fill(ctx context.Context, free, rotate int, start func(jetstream.Msg)) int {
	took := 0
	for _, class := range job.Classes {
		cons := w.consumers(class)
		for i := range cons {
			if took == free || ctx.Err() != nil {
				return took
			}
			took += w.pullFrom(cons[(i+rotate)%len(cons)], free-took, start)
		}
	}
	return took
}

// pullFrom takes up to n jobs from one consumer without waiting, and starts
// each. A pull asks for no more jobs than fit the fetch budget
// (Config.FetchBytes) if each were as large as the connection carries, nor
// more than the consumer's max_batch: a pull for 16 jobs of 8 MiB would
// flood the connection that carries this worker's replies, heartbeats and
// resume questions, and the server would cut it as a slow consumer
// (docs/operations.md, "Large requests").
func (w *Worker) pullFrom(c jetstream.Consumer, n int, start func(jetstream.Msg)) int {
	took := 0
	per := w.pullBatch()
	if limit := c.CachedInfo().Config.MaxRequestBatch; limit > 0 {
		per = min(per, limit)
	}
	for took < n {
		want := min(n-took, per)
		batch, err := c.FetchNoWait(want)
		if err != nil {
			w.log.Warn("pull jobs", "consumer", c.CachedInfo().Name, "err", err)
			return took
		}
		got := 0
		for m := range batch.Messages() {
			got++
			w.startedJob()
			start(m)
		}
		took += got
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			w.log.Warn("pull jobs", "consumer", c.CachedInfo().Name, "err", err)
			return took
		}
		if got < want {
			return took // The consumer has no more for now.
		}
	}
	return took
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

// startedJob counts a job as running and records the peak.
func (w *Worker) startedJob() {
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
func (w *Worker) finishedJob() {
	w.busy.Add(-1)
	w.slotsChanged.Store(true)
	w.released <- struct{}{} // Never blocks: at most Slots jobs hold a slot.
}
