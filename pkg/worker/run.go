package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// errCanceled is the cause of a job context canceled by its requester.
var errCanceled = errors.New("canceled by requester")

// task is one delivery of a job to this worker, or one node command.
type task struct {
	w         *Worker
	msg       jetstream.Msg // nil for a node command, which is not queued
	method    string
	body      []byte
	id        string
	route     string
	reply     string
	requester string
	model     string    // canonical, from the subject
	class     job.Class // from the subject
	taken     time.Time // when this worker took the job
	// reconnects is the connection's reconnect count when the job was
	// taken (interruptedSince).
	reconnects uint64
	attempt    int
	cancel     context.CancelCauseFunc

	sendMu sync.Mutex // send and the heartbeats
	seq    int
	sent   time.Time // when the last reply was sent
}

// run executes one delivered job and settles it. It owns the job's slot.
func (w *Worker) run(ctx context.Context, m jetstream.Msg) {
	defer w.finishedJob(m)
	ctx, span := w.startRun(ctx, m)
	defer span.End()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t, res := w.accept(ctx, m, cancel)
	if t == nil {
		traceResult(span, malformed("cannot be answered: buried"), false)
		return // Unanswerable; accept settled it.
	}
	if res.kind == 0 {
		res = t.executeTracked(ctx)
	}
	t.settle(ctx, res)
	traceResult(span, res, t.attempt >= w.q.MaxDeliver())
}

// executeTracked runs execute while the task is findable by its ID, so a
// cancel from its requester reaches it.
func (t *task) executeTracked(ctx context.Context) result {
	t.w.mu.Lock()
	t.w.countLoadLocked(t.model)
	t.w.running[t.id] = t
	t.w.mu.Unlock()
	defer func() {
		t.w.mu.Lock()
		delete(t.w.running, t.id)
		t.w.mu.Unlock()
	}()
	return t.execute(ctx)
}

// accept validates a delivered job. It returns a nil task when the job cannot
// even be answered (it settles such a job itself), and a non-zero result when
// the job must be settled without running.
func (w *Worker) accept(ctx context.Context, m jetstream.Msg, cancel context.CancelCauseFunc) (*task, result) {
	h := m.Headers()
	t := &task{w: w, msg: m, method: http.MethodPost, body: m.Data(), id: h.Get(job.HeaderJob), route: h.Get(job.HeaderRoute),
		reply: h.Get(job.HeaderReply), cancel: cancel}
	t.taken = time.Now()
	t.reconnects = w.nc.Stats().Reconnects
	if md, err := m.Metadata(); err == nil {
		t.attempt = int(md.NumDelivered)
		if model, class, _, err := job.ParseJobSubject(m.Subject()); err == nil {
			w.metrics.queueWait.WithLabelValues(model, string(class)).Observe(t.taken.Sub(md.Timestamp).Seconds())
			if t.attempt > 1 {
				w.metrics.redelivered.WithLabelValues(model, string(class)).Inc()
			}
		}
	}
	if t.id == "" {
		t.id = h.Get(job.HeaderMsgID)
	}
	owner, _, replyErr := job.ParseReplySubject(t.reply)
	model, class, requester, subjErr := job.ParseJobSubject(m.Subject())
	var reason string
	switch {
	case replyErr != nil || !job.ValidToken(t.id) || t.attempt < 1:
		reason = "invalid reply subject or job id"
	case subjErr != nil:
		reason = subjErr.Error()
	case owner != requester:
		// The worker must not be a confused deputy: it publishes only into
		// the replies of whoever published the job (docs/security.md).
		reason = fmt.Sprintf("reply subject %s belongs to requester %q, but the job was published by %q", t.reply, owner, requester)
	}
	if reason != "" {
		// Nobody to answer who may hear it: bury the job with the reason.
		w.log.Warn("burying job that cannot be answered", "subject", m.Subject(), "job", t.id, "reply", t.reply, "why", reason)
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.q.Bury(bctx, m.Subject(), streamSeq(m), h, m.Data(), reason, t.attempt, w.cfg.ID); err != nil {
			w.log.Warn("bury job", "job", t.id, "err", err)
		}
		// Nobody was answered: the record has no status.
		audited := t.audit(ctx, result{kind: resFailed, msg: reason, bury: true})
		if err := m.TermWithReason(reason); err != nil {
			w.log.Warn("settle job", "job", t.id, "err", err)
		}
		audited()
		return nil, result{}
	}
	t.requester, t.model, t.class = requester, model, class
	rt, ok := job.LookupRoute(t.route)
	if !ok || !rt.Queued {
		return t, malformed(fmt.Sprintf("route %q cannot be queued", t.route))
	}
	if msg := checkJobModel(rt, h, m.Data(), model); msg != "" {
		return t, malformed(msg)
	}
	if d := h.Get(job.HeaderDeadline); d != "" {
		deadline, err := time.Parse(time.RFC3339Nano, d)
		if err != nil {
			return t, malformed(fmt.Sprintf("bad %s %q", job.HeaderDeadline, d))
		}
		// The deadline bounds the wait for a worker. A redelivery of a live
		// requester's job was taken in time (or handed back): whether it is
		// still wanted is the requester's to say, in answer to the resume
		// question, so that an answer running past the queue wait can still
		// fail over.
		if time.Now().After(deadline) && (t.attempt == 1 || !t.live()) {
			if h.Get(job.HeaderBatch) != "" {
				// A batch job's deadline is the end of its batch's completion window.
				return t, expired(http.StatusRequestTimeout, "batch expired: the request did not start within the batch's completion window; not run")
			}
			return t, expired(http.StatusServiceUnavailable, "job waited in the queue past its deadline; not run")
		}
	}
	w.mu.Lock()
	canceled := w.canceled.has(t.requester + "." + t.id)
	w.mu.Unlock()
	if canceled || w.batchCanceled(ctx, h) {
		return t, result{kind: resCanceled}
	}
	if r, ok := w.passOn(ctx, t, rt); ok {
		return t, r
	}
	if r, ok := w.leaveToPreferred(ctx, t); ok {
		return t, r
	}
	return t, result{}
}

// batchCanceled reports whether the job belongs to a batch that was canceled
// (ollamaq batch cancel, docs/batch.md): its queued jobs are dropped, not run.
// The lookup is one KV get; if it fails the job runs, as it would have.
func (w *Worker) batchCanceled(ctx context.Context, h nats.Header) bool {
	id := h.Get(job.HeaderBatch)
	if id == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	canceled, err := w.q.BatchCanceled(ctx, id)
	if err != nil {
		w.log.Warn("look up batch", "batch", id, "err", err)
	}
	return canceled
}

// checkModel returns a complaint when the body names another model than the
// subject it was published on. A body that is not JSON is left to Ollama,
// whose error message the client expects.
func checkModel(body []byte, model string) string {
	if err := job.CheckModelKeys(body); err != nil {
		return err.Error() // The model checked might not be the one that runs.
	}
	name, ok := bodyModel(body)
	if !ok {
		return ""
	}
	c, err := job.CanonicalModel(name)
	if err != nil || c != model {
		return fmt.Sprintf("job for model %q was published on the subject of model %q", name, model)
	}
	return ""
}

// bodyModel returns the model an Ollama request body names ("model", or
// "name" as /api/show takes it); ok is false when the body is not JSON.
func bodyModel(body []byte) (name string, ok bool) {
	var req struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	if json.Unmarshal(body, &req) != nil {
		return "", false
	}
	if req.Model != "" {
		return req.Model, true
	}
	return req.Name, true
}

// execute calls Ollama and relays its response. It keeps the job alive with
// in-progress signals while it runs.
func (t *task) execute(ctx context.Context) result {
	stop := t.keepAlive()
	defer stop()
	body, resumed, sp, res, ok := t.resume(ctx)
	if !ok && res.kind != resDone {
		return res
	}
	start := job.Reply{Kind: job.KindStart, Worker: t.w.cfg.ID, Resumed: resumed}
	if t.msg != nil {
		start.Ack = t.msg.Reply() // For a NAK from the requester should this worker fall silent.
	}
	if err := t.send(start); err != nil {
		return result{kind: resHandBack, msg: err.Error()}
	}
	if !ok {
		return res // The requester has the whole answer: start, then done.
	}
	traceContinue(ctx, resumed)
	body, hideUsage := askForUsage(t.route, body)
	defer t.heartbeats()()
	defer t.watchRequester(ctx)()

	sent := time.Now()
	octx, ospan := t.startOllama(ctx)
	defer ospan.End()
	resp, err := t.w.ollama.DoType(octx, t.method, t.route, t.bodyType(), body)
	ollamaAnswered(ospan, resp, err)
	if err != nil {
		if r, ok := t.interrupted(ctx); ok {
			return r
		}
		poke(t.w.refresh) // Probably down: stop pulling until it answers again.
		t.w.jobWentOK(false, err.Error())
		return retry(http.StatusBadGateway, "ollama unreachable: "+err.Error())
	}
	defer func() { _ = resp.Body.Close() }() // A read-only body; closing cannot lose data.

	if resp.StatusCode >= 400 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)) // Best effort: the status alone still answers.
		msg := ollama.ErrorMessage(body)
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		r := failed(resp.StatusCode, msg)
		if resp.StatusCode >= 500 {
			t.w.jobWentOK(false, msg)
		}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			r.kind = resRetry
		}
		if len(bytes.TrimSpace(body)) > 0 {
			r.body, r.contentType = body, resp.Header.Get("Content-Type")
		}
		return r
	}

	ct := resp.Header.Get("Content-Type")
	rt, _ := job.LookupRoute(t.route) // Checked in accept, or a node command's.
	meter := newUsageMeter(schemaOf(rt), ct)
	first := true
	var sendErr error
	relay := func(b []byte) error {
		if meter.frame(b) && hideUsage && usageOnlyChunk(b) {
			return nil // Asked for by the worker, not the client: read, not relayed.
		}
		r := job.Reply{Kind: job.KindData, Data: b}
		if first {
			r.Status, r.ContentType, first = resp.StatusCode, ct, false
			t.observeFirstToken(time.Since(sent))
			traceFirstToken(ctx, time.Since(sent))
		}
		sendErr = t.send(r)
		return sendErr
	}
	err = job.Frames(resp.Body, ct, func(b []byte) error {
		if sp == nil {
			return relay(b)
		}
		for _, out := range sp.frame(b) {
			if err := relay(out); err != nil {
				return err
			}
		}
		return nil
	})
	usage := t.observeUsage(meter)
	if err == nil && first {
		err = t.send(job.Reply{Kind: job.KindData, Status: resp.StatusCode, ContentType: ct})
	}
	if err != nil {
		if r, ok := t.interrupted(ctx); ok {
			return r
		}
		if sendErr != nil {
			// NATS, not Ollama: let the job be redelivered and continued.
			return result{kind: resHandBack, msg: sendErr.Error()}
		}
		t.w.jobWentOK(false, "response broke off: "+err.Error())
		return failed(http.StatusBadGateway, "ollama response broke off: "+err.Error())
	}
	t.w.jobWentOK(true, "")
	return result{kind: resDone, usage: usage}
}

// observeFirstToken records the time to Ollama's first response bytes.
func (t *task) observeFirstToken(d time.Duration) {
	if t.msg != nil {
		t.w.metrics.firstToken.WithLabelValues(t.model, string(t.class)).Observe(d.Seconds())
	}
}

// observeUsage counts the tokens the response reported, once per job, and
// returns them for the done reply; nil when Ollama reported none, and for a
// node command.
func (t *task) observeUsage(m *usageMeter) *job.Usage {
	c, ok := m.result()
	if t.msg == nil || !ok {
		return nil
	}
	if c.completion > 0 {
		t.w.countTokens(t.model, c.completion)
		t.w.metrics.tokens.WithLabelValues(t.model).Add(float64(c.completion))
		if c.evalDuration > 0 {
			t.w.metrics.tokensPerSecond.WithLabelValues(t.model).Observe(float64(c.completion) / c.evalDuration.Seconds())
		}
	}
	return &job.Usage{PromptTokens: c.prompt, CompletionTokens: c.completion}
}

// interrupted tells whether the job's context ended, and why.
func (t *task) interrupted(ctx context.Context) (result, bool) {
	if ctx.Err() == nil {
		return result{}, false
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errCanceled):
		return result{kind: resCanceled}, true
	case errors.Is(cause, errRequesterGone):
		return result{kind: resCanceled, msg: "requester gone"}, true
	case errors.Is(cause, errSuperseded):
		return result{kind: resSuperseded}, true
	case errors.Is(cause, errRequesterSilent):
		return result{kind: resHandBack, msg: "its requester does not answer"}, true
	case errors.Is(cause, errRepliesLost):
		return result{kind: resHandBack, msg: "its requester lost replies on the way"}, true
	}
	return result{kind: resHandBack, msg: "worker stopping"}, true
}

// keepAlive tells JetStream the job is in progress every third of the ack
// wait, so a long generation is not redelivered. The returned func stops it.
func (t *task) keepAlive() func() {
	if t.msg == nil {
		return func() {} // A node command is not queued: nothing to keep alive.
	}
	return every(t.w.q.AckWait()/3, func() bool {
		if err := t.msg.InProgress(); err != nil {
			t.w.log.Warn("signal job in progress", "job", t.id, "err", err)
		}
		return true
	})
}

// every calls fn every d on a goroutine of its own until fn returns false or
// the returned func is called; that func waits for the goroutine to end.
func every(d time.Duration, fn func() bool) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if !fn() {
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }); <-stopped }
}

// send publishes the next reply message of this attempt.
func (t *task) send(r job.Reply) error {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	return t.sendLocked(r)
}

// sendIfQuiet sends a heartbeat if nothing was sent for quiet.
func (t *task) sendIfQuiet(quiet time.Duration) error {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if time.Since(t.sent) < quiet {
		return nil
	}
	return t.sendLocked(job.Reply{Kind: job.KindHeartbeat})
}

func (t *task) sendLocked(r job.Reply) error {
	t.seq++
	r.Job, r.Attempt, r.Seq = t.id, t.attempt, t.seq
	t.sent = time.Now()
	if err := t.w.nc.PublishMsg(queue.ReplyMsg(t.reply, r)); err != nil {
		return fmt.Errorf("publish reply: %w", err)
	}
	return nil
}
