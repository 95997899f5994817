package worker

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
)

type resultKind int

const (
	resDone     resultKind = iota + 1 // relayed in full: ack
	resFailed                         // permanent failure: error to the requester, term
	resRetry                          // transient failure: nak with delay, or fail on the last attempt
	resCanceled                       // the requester canceled: term
	resHandBack                       // the worker is stopping: nak for immediate redelivery
	resPassOn                         // its Ollama lacks the route: nak for another worker (passon.go)
	resAffinity                       // it prefers another worker, which can take it: nak for that one (affinity.go)
	// resSuperseded: the requester follows a later delivery of the job (it
	// took this worker for dead); that delivery is not this worker's to
	// settle, answer or audit.
	resSuperseded
)

// retryDelay is how long a transiently failed job waits before its next
// delivery, so that another worker, or this one's recovered Ollama, can take
// it: base after the first attempt, doubling with each (2s, 4s, 8s by default).
func retryDelay(base time.Duration, attempt int) time.Duration {
	return base << min(max(attempt-1, 0), 5)
}

// result is how a job ended on this worker.
type result struct {
	kind   resultKind
	status int
	msg    string
	// bury sends the job to the dead letters before it is terminated: it was
	// malformed, or no attempt could run it.
	bury bool
	// body and contentType are Ollama's own error response, relayed as it is
	// (its shape differs between native and OpenAI routes); empty for errors
	// the worker makes, which get Ollama's native shape.
	body        []byte
	contentType string
	// expired: the job was not run because its deadline had passed.
	expired bool
	// usage is what Ollama said the job cost, on resDone when it said so.
	usage *job.Usage
}

// errorReply is the error message that ends a job or command.
func (r result) errorReply() job.Reply {
	rep := job.Reply{Kind: job.KindError, Status: r.status, Error: r.msg, Data: r.body, ContentType: r.contentType}
	if len(rep.Data) == 0 {
		rep.Data, rep.ContentType = job.ErrorBody(r.msg), ""
	}
	return rep
}

func failed(status int, msg string) result { return result{kind: resFailed, status: status, msg: msg} }
func malformed(msg string) result          { return result{kind: resFailed, status: 400, msg: msg, bury: true} }
func retry(status int, msg string) result  { return result{kind: resRetry, status: status, msg: msg} }

func expired(status int, msg string) result {
	return result{kind: resFailed, status: status, msg: msg, expired: true}
}

// outcome is the audit outcome of a job that ends with r here for good, or
// "" when r hands it back to the queue.
func (r result) outcome() string {
	switch {
	case r.kind == resDone:
		return audit.Done
	case r.kind == resCanceled:
		return audit.Canceled
	case r.kind != resFailed:
		return ""
	case r.bury:
		return audit.DeadLettered
	case r.expired:
		return audit.Expired
	}
	return audit.Failed
}

// settle is the one function that decides what happens to a job that ran or
// was refused: each outcome maps to exactly one of ack, term or nak. A job
// that ends here for good (ack, term) gets its audit record after its last
// reply and before JetStream hears: should the worker die in between, the
// job runs again rather than losing its record, and the record's
// de-duplication keeps one.
func (t *task) settle(ctx context.Context, r result) {
	w := t.w
	log := w.log.With("job", t.id, "model", t.model, "attempt", t.attempt)
	if t.msg == nil {
		t.answer(ctx, r)
		return
	}
	m, labels := w.metrics, []string{t.model, string(t.class)}
	if t.model != "" && r.kind != resPassOn && r.kind != resAffinity {
		defer func() { m.duration.WithLabelValues(labels...).Observe(time.Since(t.taken).Seconds()) }()
	} else if t.model == "" {
		labels = []string{"", ""} // A job whose subject did not parse.
	}
	if r.kind == resRetry && t.attempt >= w.q.MaxDeliver() {
		r.kind = resFailed
		r.msg = fmt.Sprintf("%s (gave up after %d attempts)", r.msg, t.attempt)
		r.body, r.contentType = nil, "" // The message changed; Ollama's body no longer says it.
		r.bury = true
	}
	residency := r.kind != resRetry && r.kind != resHandBack && r.kind != resPassOn && r.kind != resAffinity && t.mayChangeResidency()
	if residency && r.kind != resDone {
		// A job can load its model, or unload it (keep_alive): tell the
		// fleet now, not a heartbeat later, so /api/ps is fresh.
		defer poke(w.refresh)
	}
	var err error
	switch r.kind {
	case resDone:
		done := job.Reply{Kind: job.KindDone, Usage: r.usage}
		if residency {
			// Before the done reply, which names the record: the requester
			// (the dispatcher) ends the response once its view has it, so
			// that an /api/ps right after the answer shows the change.
			// Heartbeats meanwhile, or the requester would take this
			// worker for dead and have the job redelivered.
			stop := t.heartbeats()
			if done.Record = w.recordChange(ctx); done.Record != 0 {
				done.Worker = w.cfg.ID
			}
			stop()
		}
		if err = t.send(done); err == nil {
			switch t.confirmEnd(ctx, done) {
			case resHandBack:
				t.handBack("its requester lost replies on the way")
				return
			case resSuperseded:
				log.Info("job left to its later delivery: the requester follows another worker now")
				return
			}
			audited := t.audit(ctx, r)
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err = t.msg.DoubleAck(actx)
			cancel()
			audited()
		}
		w.jobsDone.Add(1)
		w.countDone(t.model)
		m.completed.WithLabelValues(labels...).Inc()
		log.Debug("job done")
	case resFailed:
		if r.bury {
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if berr := w.q.Bury(bctx, t.msg.Subject(), streamSeq(t.msg), t.msg.Headers(), t.msg.Data(), r.msg, t.attempt, w.cfg.ID); berr != nil {
				log.Warn("bury job", "err", berr)
			}
			cancel()
			m.deadLettered.WithLabelValues(labels...).Inc()
		}
		if serr := t.send(r.errorReply()); serr != nil {
			log.Warn("send job error", "err", serr)
		}
		audited := t.audit(ctx, r)
		err = t.msg.TermWithReason(r.msg)
		audited()
		w.failed.Add(1)
		w.countFailed(t.model)
		m.failed.WithLabelValues(labels...).Inc()
		log.Info("job failed", "status", r.status, "reason", r.msg)
	case resRetry:
		delay := retryDelay(w.cfg.RetryDelay, t.attempt)
		err = t.msg.NakWithDelay(delay)
		m.retried.WithLabelValues(labels...).Inc()
		log.Info("job handed back for retry", "status", r.status, "reason", r.msg, "delay", delay)
	case resCanceled:
		if serr := t.send(job.Reply{Kind: job.KindError, Status: 499, Error: "request canceled", Data: job.ErrorBody("request canceled")}); serr != nil {
			log.Debug("send job cancel", "err", serr)
		}
		audited := t.audit(ctx, r)
		err = t.msg.TermWithReason(cmp.Or(r.msg, "canceled by requester"))
		audited()
		m.canceled.WithLabelValues(labels...).Inc()
		log.Info("job canceled", "why", cmp.Or(r.msg, "canceled by requester"))
	case resSuperseded:
		log.Info("job left to its later delivery: the requester follows another worker now")
	case resHandBack:
		t.handBack(r.msg)
	case resPassOn:
		delay := passOnDelay(w.cfg.Poll, t.attempt)
		w.holdOff(consumerKey{t.model, t.class}, time.Now().Add(holdOffFor(w.cfg.Poll, t.attempt)))
		if err = t.msg.NakWithDelay(delay); err == nil && delay == 0 {
			// The others look now rather than at their next poll.
			if berr := w.nc.Publish(job.QueuedSubject(t.model, t.class, t.requester), nil); berr != nil {
				log.Debug("ring the doorbell", "err", berr)
			}
		}
		m.passedOn.WithLabelValues(labels...).Inc()
		log.Debug("job left to a worker whose Ollama has its route", "route", t.route, "why", r.msg, "delay", delay)
	case resAffinity:
		err = t.leaveFor(r)
	default:
		err = fmt.Errorf("no outcome for job (kind %d)", r.kind)
	}
	if err != nil {
		log.Warn("settle job", "err", err)
	}
}

// handBack NAKs the delivery for another worker at once and rings the
// doorbell, so that an idle worker takes it now rather than at its next poll.
func (t *task) handBack(why string) {
	w := t.w
	log := w.log.With("job", t.id, "model", t.model, "attempt", t.attempt)
	w.metrics.retried.WithLabelValues(t.model, string(t.class)).Inc()
	if err := t.msg.Nak(); err != nil {
		log.Warn("settle job", "err", err)
		return
	}
	if err := w.nc.Publish(job.QueuedSubject(t.model, t.class, t.requester), nil); err != nil {
		log.Debug("ring the doorbell", "err", err)
	}
	log.Info("job handed back", "reason", why)
}

// answer ends a node command, which has no JetStream message to settle: the
// requester hears done or an error, and nothing is retried. A command that
// changed the models, or unloaded one, has the node record written first,
// and its done reply names the record's revision.
func (t *task) answer(ctx context.Context, r result) {
	rep := job.Reply{Kind: job.KindDone}
	if r.kind == resDone && t.changesModels() {
		if rep.Record = t.w.recordChange(ctx); rep.Record != 0 {
			rep.Worker = t.w.cfg.ID
		}
	}
	switch r.kind {
	case resDone:
	case resCanceled:
		r.status, r.msg = 499, "request canceled"
	case resHandBack:
		r.status, r.msg = http.StatusServiceUnavailable, "worker stopping"
	}
	if r.kind != resDone {
		rep = r.errorReply()
	}
	if err := t.send(rep); err != nil {
		t.w.log.Warn("answer node command", "route", t.route, "err", err)
	}
}

// changesModels tells whether a node command changes which models the
// worker's Ollama has (pull, delete, copy), or which it has loaded (an
// unload).
func (t *task) changesModels() bool {
	rt, _ := job.LookupRoute(t.route)
	return rt.Changes || ollama.Unloads(t.route, t.body)
}

// mayChangeResidency tells whether running t may have changed which models
// its Ollama holds in memory: its model was not loaded when the worker last
// looked, or the request sets keep_alive (0 unloads it).
func (t *task) mayChangeResidency() bool {
	if bytes.Contains(t.body, []byte(`"keep_alive"`)) {
		return true
	}
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	for _, m := range t.w.inventory.Loaded {
		if c, err := job.CanonicalModel(m.Model); err == nil && c == t.model {
			return false
		}
	}
	return true
}

// streamSeq is a delivered job's sequence in the job stream (0 if unknown).
func streamSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}
