package batch

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Counts says where the queued requests of a batch are.
type Counts struct {
	Queued   int `json:"queued"`   // waiting for a worker
	Running  int `json:"running"`  // started, not finished
	Done     int `json:"done"`     // answered
	Failed   int `json:"failed"`   // ended with an error
	Canceled int `json:"canceled"` // dropped or stopped by a cancel
	Expired  int `json:"expired"`  // not finished within the completion window
}

// Finished counts the requests that have their result.
func (c Counts) Finished() int { return c.Done + c.Failed + c.Canceled + c.Expired }

// phase is how far one job got in one attempt.
type phase uint8

const (
	phaseNone phase = iota
	phaseQueued
	phaseRunning
	phaseDone
	phaseFailed
	phaseCanceled
	phaseExpired
)

func (p phase) final() bool { return p >= phaseDone }

// jobState is what the results say about one job.
type jobState struct {
	attempt int32
	phase   phase
}

// tally follows the reply headers of a batch's jobs and counts them.
// It is not safe for concurrent use.
type tally struct {
	jobs   map[string]jobState
	counts Counts
}

func newTally() *tally { return &tally{jobs: map[string]jobState{}} }

// phaseOf reads the kind and status of a reply message.
func phaseOf(h nats.Header) phase {
	switch job.Kind(h.Get(job.HeaderKind)) {
	case KindQueued:
		return phaseQueued
	case job.KindStart, job.KindData:
		return phaseRunning
	case job.KindDone:
		return phaseDone
	case job.KindError:
		switch {
		case h.Get(job.HeaderStatus) == "499":
			return phaseCanceled
		case isExpiry(h):
			return phaseExpired
		}
		return phaseFailed
	}
	return phaseNone
}

// add takes one message from the results stream and reports the job's new
// state when it changed. A higher attempt replaces a lower one (a job
// redelivered after its worker died); within an attempt a job only moves
// forward. The first result stands: a job that runs again after it was
// answered (its acknowledgement was lost) keeps its first answer, as
// Results does.
func (t *tally) add(subject string, h nats.Header) (id string, st jobState, changed bool) {
	id = jobOfSubject(subject)
	p := phaseOf(h)
	if p == phaseNone {
		return id, jobState{}, false
	}
	attempt, err := strconv.Atoi(h.Get(job.HeaderAttempt))
	if err != nil || attempt < 0 {
		return id, jobState{}, false
	}
	old, known := t.jobs[id]
	next := jobState{attempt: int32(attempt), phase: p}
	switch {
	case !known:
	case old.phase.final(), p == phaseQueued, next.attempt < old.attempt:
		return id, old, false
	case next.attempt == old.attempt && p <= old.phase:
		return id, old, false
	}
	if known {
		t.count(old.phase, -1)
	}
	t.count(p, 1)
	t.jobs[id] = next
	return id, next, true
}

func (t *tally) count(p phase, d int) {
	switch p {
	case phaseQueued:
		t.counts.Queued += d
	case phaseRunning:
		t.counts.Running += d
	case phaseDone:
		t.counts.Done += d
	case phaseFailed:
		t.counts.Failed += d
	case phaseCanceled:
		t.counts.Canceled += d
	case phaseExpired:
		t.counts.Expired += d
	}
}
