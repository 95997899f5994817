package worker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Liveness, both ways (docs/protocol.md, "Heartbeats" and "Requester
// liveness"): a worker that holds a job sends a heartbeat whenever it has
// sent nothing for queue.HeartbeatEvery, so its requester can tell a dead or
// hung worker within a second and NAK the delivery; and a worker that runs a
// job whose requester answers resume requests (job.HeaderLive) asks it every
// ProbeEvery whether it still wants the answer, and stops the job when it is
// gone or follows a later attempt.

// ProbeEvery is how often a worker asks a live requester whether it is still
// there while it runs one of its jobs.
const ProbeEvery = time.Second

// errSuperseded is the cause of a job context whose requester follows a later
// attempt: the job was redelivered (this worker was taken for dead) and the
// new delivery is not this worker's to settle.
var errSuperseded = errors.New("superseded by a later attempt")

// errRequesterGone is the cause of a job context whose requester went away.
var errRequesterGone = errors.New("requester gone")

// errRequesterSilent is the cause of a job context whose requester has no
// responder: gone, or moving to another server. The job is handed back,
// not dropped: the next delivery's resume question, which asks for up to
// LiveRetry, tells which.
var errRequesterSilent = errors.New("requester not answering")

// errRepliesLost is the cause of a job context whose requester lost some of
// its replies on the way and could not NAK the delivery itself
// (job.Progress.Lost): the worker hands the job back, and the next worker
// continues from what the requester has.
var errRepliesLost = errors.New("replies lost on the way")

// ReconnectGrace is how long after this worker's NATS connection came back
// "no responders" to a liveness question means nothing: a restarted
// nats-server hears the workers and requesters reconnect one by one (a
// client waits 2 s and a jitter before it tries again), so a live requester
// may not be back yet.
const ReconnectGrace = 10 * time.Second

// LiveRetry is how long a worker keeps asking a live requester that has no
// responder before it takes it for gone and drops a job it has not run: a
// client whose connection moves to another server is back within nats.go's
// reconnect wait (2 s), its jitter (up to 1 s with TLS) and its handshake,
// which on a loaded machine took more than 3 s (the chaos test lost a job
// so). A requester found gone so is remembered (goneRequesters): its other
// jobs are dropped at the first "no responders", so a dead requester's
// queue costs one LiveRetry, not one per job.
const LiveRetry = 6 * time.Second

// goneFor is how long a requester found gone is remembered; goneMax bounds
// how many are.
const (
	goneFor = time.Minute
	goneMax = 1024
)

// goneRequesters remembers requesters that did not answer for LiveRetry.
type goneRequesters struct {
	mu sync.Mutex
	at map[string]time.Time
}

// known tells whether requester was found gone within goneFor.
func (g *goneRequesters) known(requester string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.at[requester]
	return ok && time.Since(at) < goneFor
}

// mark remembers requester as gone; alive forgets it (it answered).
func (g *goneRequesters) mark(requester string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.at == nil {
		g.at = make(map[string]time.Time)
	}
	if len(g.at) >= goneMax {
		for r, at := range g.at {
			if time.Since(at) >= goneFor || len(g.at) >= goneMax {
				delete(g.at, r)
			}
		}
	}
	g.at[requester] = time.Now()
}

func (g *goneRequesters) alive(requester string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.at, requester)
}

// reconnects remembers when the worker last saw its connection's reconnect
// count change.
type reconnects struct {
	mu sync.Mutex
	n  uint64
	at time.Time
}

// noRespondersMeansGone tells whether a requester that has no responder now
// is gone: not while the worker's own connection came back within
// ReconnectGrace (or was seen to have come back only now).
func (w *Worker) noRespondersMeansGone() bool {
	n := w.nc.Stats().Reconnects
	w.reconnects.mu.Lock()
	defer w.reconnects.mu.Unlock()
	if n != w.reconnects.n {
		w.reconnects.n, w.reconnects.at = n, time.Now()
	}
	return w.reconnects.at.IsZero() || time.Since(w.reconnects.at) >= ReconnectGrace
}

// live tells whether the job's requester said it answers resume requests.
func (t *task) live() bool {
	return t.msg != nil && t.msg.Headers().Get(job.HeaderLive) == "1"
}

// heartbeats sends a heartbeat whenever nothing was sent for
// queue.HeartbeatEvery, until the returned func is called.
func (t *task) heartbeats() func() {
	if t.msg == nil {
		return func() {}
	}
	return every(queue.HeartbeatEvery/2, func() bool {
		if err := t.sendIfQuiet(queue.HeartbeatEvery); err != nil {
			t.w.log.Debug("send heartbeat", "job", t.id, "err", err)
		}
		return true
	})
}

// watchRequester probes a live requester every ProbeEvery while the job runs
// and cancels the job (cancel, with the cause) when the requester is gone or
// follows a later attempt. A probe that times out changes nothing: a busy
// requester is not a dead one.
func (t *task) watchRequester(ctx context.Context) func() {
	if !t.live() {
		return func() {}
	}
	return every(ProbeEvery, func() bool {
		if ctx.Err() != nil {
			return false
		}
		if cause := t.probe(ctx); cause != nil {
			t.w.log.Info("stopping job", "job", t.id, "attempt", t.attempt, "why", cause)
			t.cancel(cause)
			return false
		}
		return true
	})
}

// probe asks the requester whether it still follows this attempt: nil when it
// does (or does not answer in time), errRequesterGone or errSuperseded when
// the job must stop.
func (t *task) probe(ctx context.Context) error {
	q, _ := json.Marshal(job.ResumeRequest{Attempt: t.attempt, Probe: true}) // Always marshals.
	pctx, cancel := context.WithTimeout(ctx, ProbeEvery)
	defer cancel()
	m, err := t.w.nc.RequestWithContext(pctx, job.ResumeSubject(t.requester, t.id), q)
	switch {
	case errors.Is(err, nats.ErrNoResponders) && t.w.noRespondersMeansGone():
		return errRequesterSilent
	case err != nil:
		return nil
	}
	t.w.gone.alive(t.requester)
	var p job.Progress
	if json.Unmarshal(m.Data, &p) != nil {
		return nil
	}
	switch {
	case p.Gone:
		return errRequesterGone
	case p.Lost:
		return errRepliesLost
	case p.Attempt > t.attempt:
		return errSuperseded
	}
	return nil
}

// interruptedSince tells whether the worker's NATS connection went down at
// some time since the job was taken, or is down now: replies sent meanwhile
// may not have reached the requester.
func (t *task) interruptedSince() bool {
	return t.w.nc.Stats().Reconnects != t.reconnects || !t.w.nc.IsConnected()
}

// confirmEnd is for a job whose done reply went out while the worker's
// connection was interrupted: the done may have been lost, or replies
// before it. Once connected again it sends the done once more, as a request
// on the reply subject (the requester takes it in order with the replies
// before it, ignores it if it has the done, and answers like a probe). It
// returns how to settle: resDone when the answer is whole at the requester
// (or it does not say), resHandBack when replies were lost and the
// requester could not NAK, resSuperseded when it follows a later attempt.
func (t *task) confirmEnd(ctx context.Context, done job.Reply) resultKind {
	if !t.live() || !t.interruptedSince() {
		return resDone
	}
	if !t.w.nc.IsConnected() {
		ch := t.w.nc.StatusChanged(nats.CONNECTED)
		defer t.w.nc.RemoveStatusListener(ch)
		select {
		case <-ch:
		case <-time.After(ReconnectGrace):
		case <-ctx.Done():
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	t.sendMu.Lock()
	done.Job, done.Attempt, done.Seq = t.id, t.attempt, t.seq
	m := queue.ReplyMsg(t.reply, done)
	t.sendMu.Unlock()
	a, err := t.w.nc.RequestMsgWithContext(cctx, m)
	if err != nil {
		return resDone // An older requester, or none: settle as ever.
	}
	var p job.Progress
	if json.Unmarshal(a.Data, &p) != nil {
		return resDone
	}
	switch {
	case p.Lost:
		return resHandBack
	case !p.Gone && p.Attempt > t.attempt:
		return resSuperseded
	}
	return resDone
}
