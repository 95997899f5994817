package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// ErrClosed is returned by Stream.Next after the stream or its requester was closed.
var ErrClosed = errors.New("queue: reply stream closed")

// Requester submits jobs and receives their replies through one wildcard
// subscription, ollamaq.reply.<id>.>, however many jobs are in flight: a
// subscription per job costs about eight times the throughput.
type Requester struct {
	id     string
	nc     *nats.Conn
	q      *Queue
	sub    *nats.Subscription
	resume *nats.Subscription

	mu       sync.Mutex
	streams  map[string]*Stream
	closed   bool
	stall    time.Duration
	onStall  func(id string, attempt int, why string)
	onQueued func(id string, p Position)
}

// DefaultStall is how long a started job may go without any reply message,
// heartbeats included, before the requester asks JetStream to redeliver it:
// a worker sends a heartbeat after HeartbeatEvery without other replies, so
// three missed heartbeats mean it died or hangs.
const DefaultStall = 750 * time.Millisecond

// HeartbeatEvery is how long a worker that holds a job lets pass without a
// reply message before it sends a heartbeat (docs/protocol.md, "Heartbeats").
const HeartbeatEvery = 250 * time.Millisecond

// Why a requester NAKed a delivery, as onStall is told.
const (
	NakSilent = "silent"       // no reply for the stall bound, heartbeats included
	NakLost   = "lost replies" // replies of the attempt were lost on the way
)

// SetStall sets how long a started job may go silent, heartbeats included,
// before the requester NAKs its delivery so that another worker continues it
// at once (DefaultStall unless set; 0 turns it off and leaves failover to the
// ack wait, and lost replies end the answer). onStall, if not nil, is told of
// each NAK and why (NakSilent, NakLost). Set it before the first Submit.
func (r *Requester) SetStall(d time.Duration, onStall func(id string, attempt int, why string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stall, r.onStall = d, onStall
}

// SetOnQueued has fn told of each queued reply a waiting job gets
// (Stream.Queued): its position and ETA. fn runs on the reply
// subscription's goroutine, before the replies that come after the report,
// so it must return quickly. Set it before the first Submit.
func (r *Requester) SetOnQueued(fn func(id string, p Position)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onQueued = fn
}

// NewRequester subscribes to the reply subjects of requester id, which must be
// a valid subject token and unique among running requesters.
func NewRequester(nc *nats.Conn, q *Queue, id string) (*Requester, error) {
	if !job.ValidToken(id) {
		return nil, fmt.Errorf("queue: requester id %q is not a subject token", id)
	}
	r := &Requester{id: id, nc: nc, q: q, streams: make(map[string]*Stream), stall: DefaultStall}
	sub, err := nc.Subscribe(job.ReplyPrefix+"."+id+".>", r.route)
	if err != nil {
		return nil, fmt.Errorf("subscribe replies: %w", err)
	}
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		return nil, fmt.Errorf("subscribe replies: %w", err)
	}
	r.sub = sub
	if r.resume, err = nc.Subscribe(job.ResumePrefix+"."+id+".>", r.answerResume); err != nil {
		_ = sub.Unsubscribe() // Undo the half-made requester.
		return nil, fmt.Errorf("subscribe resume requests: %w", err)
	}
	// The server must know both subscriptions before a job is submitted,
	// even on another connection: a worker that finds no responder for a
	// job's resume question drops the job (job.HeaderLive).
	if err := nc.Flush(); err != nil {
		_ = errors.Join(sub.Unsubscribe(), r.resume.Unsubscribe()) // Undo the half-made requester.
		return nil, fmt.Errorf("subscribe replies: %w", err)
	}
	return r, nil
}

// answerResume tells a worker about to run a job again what this requester
// has already received, and from then on ignores the earlier attempts.
func (r *Requester) answerResume(m *nats.Msg) {
	_, id, err := job.ParseResumeSubject(m.Subject)
	if err != nil {
		return
	}
	var req job.ResumeRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return
	}
	r.mu.Lock()
	s := r.streams[id]
	r.mu.Unlock()
	p := job.Progress{Gone: true}
	switch {
	case s != nil && req.Probe:
		p = s.probe()
	case s != nil:
		p = s.freeze(req.Attempt)
	}
	b, _ := json.Marshal(p) // A struct of strings and ints always marshals.
	_ = m.Respond(b)        // A worker that left will ask again or give up.
}

// ID returns the requester id, the third token of its reply subjects.
func (r *Requester) ID() string { return r.id }

// route runs on the subscription's goroutine and hands each reply to its stream.
func (r *Requester) route(m *nats.Msg) {
	_, id, err := job.ParseReplySubject(m.Subject)
	if err != nil {
		return // Not a subject this requester hands out.
	}
	r.mu.Lock()
	s := r.streams[id]
	r.mu.Unlock()
	if s == nil {
		if m.Reply != "" {
			_ = m.Respond(confirmGone) // The requester is done with this job.
		}
		return // The requester gave up on this job.
	}
	rep, err := job.ParseReply(m.Header, m.Data)
	if err != nil {
		s.push(localError("malformed reply from worker: " + err.Error()))
		return
	}
	s.push(rep)
	if m.Reply != "" {
		// A worker whose connection was interrupted sends its last reply
		// again and asks whether the answer is whole here now: in order
		// with the replies before it, on this one subscription. The answer
		// is a probe's: gone once the stream ended (whole, or given up
		// on), else the attempt followed, later than the worker's when
		// its replies were lost.
		b, _ := json.Marshal(s.probe()) // A struct of a bool and an int always marshals.
		_ = m.Respond(b)                // Unanswered, the worker settles as before.
	}
}

// confirmGone answers a confirmation for a job this requester no longer follows.
var confirmGone, _ = json.Marshal(job.Progress{Gone: true})

// Submit publishes j with this requester's reply subject and returns the stream
// of its replies. The caller must Close the stream.
func (r *Requester) Submit(ctx context.Context, j Job) (*Stream, error) {
	j.Reply = job.ReplySubject(r.id, j.ID)
	j.Live = true      // answerResume answers for it until the stream is closed
	j.Positions = true // push keeps queued replies apart from the answer
	s, err := r.open(j.ID)
	if err != nil {
		return nil, err
	}
	ack, err := r.q.Publish(ctx, j)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.seq = ack.Sequence
	s.bell = job.QueuedSubject(j.Model, j.Class, r.id)
	return s, nil
}

// Command sends a node command (a job.Route with Node set) straight to one worker, not
// through the queue, and returns the stream of its replies. The caller must
// Close the stream. Nothing answers if the worker is gone: bound the wait.
func (r *Requester) Command(worker, id, route string, body []byte) (*Stream, error) {
	s, err := r.open(id)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(job.NodeSubject(worker))
	m.Header.Set(job.HeaderJob, id)
	m.Header.Set(job.HeaderRoute, route)
	m.Header.Set(job.HeaderReply, job.ReplySubject(r.id, id))
	m.Data = body
	if err := r.nc.PublishMsg(m); err != nil {
		s.Close()
		return nil, fmt.Errorf("send %s to %s: %w", route, worker, err)
	}
	return s, nil
}

// open registers a stream for job id.
func (r *Requester) open(id string) (*Stream, error) {
	s := &Stream{r: r, id: id, notify: make(chan struct{}, 1)}
	r.mu.Lock()
	defer r.mu.Unlock()
	s.stall, s.onStall, s.onQueued = r.stall, r.onStall, r.onQueued
	if r.closed {
		return nil, ErrClosed
	}
	r.streams[id] = s
	return s, nil
}

// Close stops receiving replies; open streams end with ErrClosed.
func (r *Requester) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	streams := r.streams
	r.streams = map[string]*Stream{}
	r.mu.Unlock()
	for _, s := range streams {
		s.close()
	}
	err := errors.Join(r.sub.Unsubscribe(), r.resume.Unsubscribe())
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe replies: %w", err)
	}
	return nil
}

// Stream is the sequence of replies to one job. Next may be called from one
// goroutine at a time; Close and Cancel from any.
type Stream struct {
	r      *Requester
	id     string
	seq    uint64 // the job's sequence in the stream; 0 for a node command
	notify chan struct{}

	mu       sync.Mutex
	buf      []job.Reply
	buffered int // bytes of data in buf
	attempt  int
	next     int  // the Seq expected next within the attempt
	ended    bool // a done or error was queued; nothing after it counts
	closed   bool
	got      job.Transcript // data received from all attempts so far

	stall   time.Duration // see Requester.SetStall
	onStall func(id string, attempt int, why string)
	heard   time.Time // when the last reply of the current attempt came, heartbeats included
	ack     string    // the current attempt's ack subject, from its start
	naked   int       // the last attempt this stream NAKed
	broken  int       // the last attempt whose replies were lost: its later ones are dropped
	bell    string    // the job's doorbell subject; "" for a node command
	// lostCheck is when to look whether the job NAKed for a stall is still
	// in the stream (zero: no look due); see checkLost.
	lostCheck time.Time
	// giveUp is when a broken attempt that no later one followed ends the
	// answer with an error.
	giveUp time.Time
	// rearm tells Follow to compute its deadline again (see wake).
	rearm bool
	// position is the latest queued report, while the job waits.
	position Position
	onQueued func(id string, p Position)
}

// Position is a worker's report of where a waiting job stands in its
// model's queue (docs/protocol.md, "Queue position").
type Position struct {
	Position int           // jobs ahead of it, plus one
	ETA      time.Duration // the expected wait still; 0 when nothing was measured yet
	Worker   string        // the worker that reported it
	At       time.Time     // when the report came
}

// MaxBuffered bounds the reply bytes a stream holds for a reader that does
// not keep up (a slow HTTP client). Past it the stream ends with a local
// error rather than grow: the requester's memory is shared by all its jobs.
// It is twice the largest message NATS carries by default, so one whole
// non-streamed answer always fits.
const MaxBuffered = 16 << 20

// localError is an error the requester itself puts in a stream (Seq 0): the
// replies can no longer be trusted, so the stream ends with it.
func localError(msg string) job.Reply {
	return job.Reply{Kind: job.KindError, Attempt: job.SeqFinal, Seq: 0, Status: 502, Error: msg, Data: job.ErrorBody(msg)}
}

// IsLocal reports whether the reply was made by the requester rather than
// sent by a worker: the job may still be running somewhere.
func IsLocal(r job.Reply) bool { return r.Seq == 0 }

// queued keeps a queued reply's position while the job waits. It is not
// one of the stream's replies: it takes no place in any attempt, so it
// cannot disturb their order, the lost-reply checks or continuation; a
// report that comes once a worker started the job is stale and dropped.
func (s *Stream) queued(rep job.Reply) {
	s.mu.Lock()
	if s.closed || s.ended || s.attempt > 0 || rep.Position < 1 {
		s.mu.Unlock()
		return
	}
	s.position = Position{Position: rep.Position, ETA: rep.ETA, Worker: rep.Worker, At: time.Now()}
	p, fn := s.position, s.onQueued
	s.mu.Unlock()
	if fn != nil {
		fn(s.id, p)
	}
}

// Queued returns the latest position a worker reported for the job while
// it waits (a worker reports about once a second, from the job's first
// second on; the zero Position before the first report); waiting is false
// once a worker started the job or the stream ended, and for a node command.
func (s *Stream) Queued() (p Position, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ended || s.attempt > 0 || s.seq == 0 {
		return Position{}, false
	}
	return s.position, true
}

func (s *Stream) push(rep job.Reply) {
	if rep.Kind == job.KindQueued {
		s.queued(rep)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ended || rep.Attempt < s.attempt || rep.Seq != 0 && rep.Attempt <= s.broken {
		return // Done, or output of an attempt superseded by a redelivery or broken.
	}
	if rep.Attempt > s.attempt || rep.Seq == 0 {
		s.next = 1
	}
	switch {
	case rep.Seq != s.next && rep.Seq != job.SeqFinal && rep.Seq != 0 && rep.Attempt == s.attempt && s.seq != 0 && s.ack != "":
		// Core NATS lost replies (a reconnect, a slow consumer). The answer
		// so far is whole up to them: have the job redelivered, and the
		// next worker continues it from there. The rest of this attempt
		// is dropped; its worker learns from its next probe that it is
		// superseded and leaves the delivery alone. The redelivery comes
		// at once when this requester may NAK, else at the ack wait; if
		// none comes (the worker finished first), the answer ends with an
		// error at giveUp.
		s.broken = s.attempt
		s.giveUp = time.Now().Add(s.r.q.AckWait() + 2*time.Second + s.stall)
		if s.nakable() {
			// Marked now, so that a probe answered meanwhile does not tell
			// the worker to hand the job back too: a second NAK would have
			// JetStream deliver it once more.
			go s.publishNak(s.markNaked(), NakLost)
		}
		s.wake()
		return
	case rep.Seq != s.next && rep.Seq != job.SeqFinal && rep.Seq != 0:
		// Lost replies with no delivery to NAK (no start seen, stall
		// detection off, already NAKed): the answer would be silently
		// incomplete. End it with an explicit error.
		rep = localError(fmt.Sprintf("lost reply messages %d to %d of attempt %d (NATS connection interrupted)", s.next, rep.Seq-1, rep.Attempt))
	case s.buffered+len(rep.Data) > MaxBuffered:
		rep = localError(fmt.Sprintf("the client is not reading the response: more than %d bytes of it are waiting", MaxBuffered))
	}
	s.next = rep.Seq + 1
	s.attempt = rep.Attempt
	if rep.Seq != 0 {
		s.heard = time.Now()
	}
	switch rep.Kind {
	case job.KindHeartbeat:
		return // Heard, and nothing to read.
	case job.KindStart:
		s.ack = rep.Ack
		s.got.Start()
	}
	s.ended = rep.Kind == job.KindDone || rep.Kind == job.KindError
	if rep.Kind == job.KindData {
		s.got.Add(rep.Data)
	}
	s.buffered += len(rep.Data)
	s.buf = append(s.buf, rep)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// stallAt returns the next time Follow must look at the attempt without a
// reply: when it counts as stalled if nothing more is heard, when a NAKed
// job is to be looked up (checkLost), or when a broken attempt is given up
// on (giveUpIfBroken); ok=false when none is due.
func (s *Stream) stallAt() (at time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var times []time.Time
	if s.nakable() {
		times = append(times, s.heard.Add(s.stall))
	}
	if s.lostCheckDue() {
		times = append(times, s.lostCheck)
	}
	if s.giveUpDue() {
		times = append(times, s.giveUp)
	}
	if len(times) == 0 {
		return time.Time{}, false
	}
	return slices.MinFunc(times, time.Time.Compare), true
}

// giveUpDue tells whether the current attempt is broken and no later one
// began. The caller holds s.mu.
func (s *Stream) giveUpDue() bool {
	return s.broken == s.attempt && s.broken > 0 && !s.ended && !s.closed
}

// wake makes Follow compute its deadline again. The caller holds s.mu.
func (s *Stream) wake() {
	s.rearm = true
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// giveUpIfBroken ends the answer with an error when its attempt broke and
// no redelivery followed by giveUp.
func (s *Stream) giveUpIfBroken() {
	s.mu.Lock()
	due := s.giveUpDue() && !time.Now().Before(s.giveUp)
	s.mu.Unlock()
	if due {
		s.endLost()
	}
}

// endLost ends a stream whose job is over at its worker while its last
// replies never came: with done when the answer's final frame is here (only
// the done reply was lost: the answer is whole), else with an error.
func (s *Stream) endLost() {
	s.mu.Lock()
	attempt, next, whole := s.attempt, s.next, s.got.Complete()
	s.mu.Unlock()
	if whole {
		s.push(job.Reply{Kind: job.KindDone, Attempt: job.SeqFinal})
		return
	}
	s.push(localError(fmt.Sprintf("lost reply messages %d to the end of attempt %d (NATS connection interrupted)", next, attempt)))
}

// lostCheckDue tells whether a look for a NAKed job is still to come: no
// later attempt began and the stream goes on. The caller holds s.mu.
func (s *Stream) lostCheckDue() bool {
	return !s.lostCheck.IsZero() && s.naked == s.attempt && !s.ended && !s.closed
}

// nakable tells whether the current attempt may be NAKed for a stall at
// all. The caller holds s.mu.
func (s *Stream) nakable() bool {
	return s.stall > 0 && s.ack != "" && s.naked < s.attempt && !s.ended && !s.closed
}

// nakIfStalled NAKs the current attempt's delivery when it has been silent
// for the stall bound: JetStream then redelivers the job at once, and the
// next worker continues it where the requester's answer ends.
func (s *Stream) nakIfStalled() {
	s.mu.Lock()
	stalled := s.nakable() && time.Since(s.heard) >= s.stall
	s.mu.Unlock()
	if stalled {
		s.nak(NakSilent)
	}
}

// nak NAKs the current attempt's delivery, once: JetStream redelivers the
// job at once, and the next worker continues it where the requester's
// answer ends.
func (s *Stream) nak(why string) {
	s.mu.Lock()
	if s.ack == "" || s.naked >= s.attempt || s.ended || s.closed {
		s.mu.Unlock()
		return
	}
	n := s.markNaked()
	s.mu.Unlock()
	s.publishNak(n, why)
}

// nakOf is what publishNak needs of the attempt NAKed.
type nakOf struct {
	ack, bell string
	attempt   int
	onStall   func(id string, attempt int, why string)
}

// markNaked records that the current attempt is NAKed. The caller holds s.mu.
func (s *Stream) markNaked() nakOf {
	s.naked = s.attempt
	if s.seq != 0 {
		s.lostCheck = time.Now().Add(s.stall)
	}
	return nakOf{ack: s.ack, bell: s.bell, attempt: s.attempt, onStall: s.onStall}
}

// publishNak sends the NAK markNaked recorded, and rings the doorbell.
func (s *Stream) publishNak(n nakOf, why string) {
	ack, attempt, onStall, bell := n.ack, n.attempt, n.onStall, n.bell
	if err := s.r.nc.Publish(ack, []byte("-NAK")); err != nil {
		return // The ack wait redelivers it later.
	}
	if bell != "" {
		// A redelivery rings no doorbell: ring it, so an idle worker takes
		// the job now rather than at its next poll. Once flushed, the NAK is
		// at the server first.
		_ = s.r.nc.Flush()
		_ = s.r.nc.Publish(bell, nil) // Without it, the poll finds the job.
	}
	if onStall != nil {
		onStall(s.id, attempt, why)
	}
}

// checkLost looks, once a stall bound after a stall NAK that no later
// attempt followed, whether the job is still in the stream. A job that is
// gone was settled by its worker: it finished (or failed) and acked while
// its last replies were lost on the way, as when the NATS connection of
// requester or worker was interrupted (a nats-server restart). Nothing will
// redeliver it, so the stream ends with an explicit error rather than wait
// forever. A requester whose credentials may not read the stream
// (STREAM.MSG.GET) learns nothing here and waits as before.
func (s *Stream) checkLost() {
	s.mu.Lock()
	if !s.lostCheckDue() || time.Now().Before(s.lostCheck) {
		s.mu.Unlock()
		return
	}
	s.lostCheck = time.Time{}
	attempt, seq := s.attempt, s.seq
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := s.r.q.js.Stream(ctx, job.Stream)
	if err == nil {
		_, err = st.GetMsg(ctx, seq)
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return // Still queued for its redelivery, or nothing to tell.
	}
	s.mu.Lock()
	gone := s.naked == attempt && s.attempt == attempt && !s.ended && !s.closed
	s.mu.Unlock()
	if gone {
		s.endLost()
	}
}

// probe answers a worker's liveness probe, or its confirmation of a last
// reply: the attempt followed now, or Gone when the stream has ended. It
// changes nothing.
func (s *Stream) probe() job.Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.closed {
		return job.Progress{Gone: true}
	}
	// A worker whose attempt lost replies is superseded: it stops, and
	// leaves the delivery to the redelivery the NAK asked for, or, when
	// this requester could not NAK, hands the job back itself (Lost).
	broken := s.broken > 0 && s.broken == s.attempt
	return job.Progress{Attempt: max(s.attempt, s.broken+1), Lost: broken && s.naked < s.broken}
}

// freeze answers a resume request for attempt: what was received so far;
// from now on, messages of earlier attempts are dropped, so what was reported
// stays what was received.
func (s *Stream) freeze(attempt int) job.Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.closed {
		return job.Progress{Gone: true} // It already has its whole answer, or an error.
	}
	if attempt > s.attempt {
		s.attempt, s.next = attempt, 1
		s.heard, s.ack = time.Now(), "" // A new delivery: heard from, its ack subject to come.
	}
	p := s.got.Progress()
	p.Attempt = s.attempt
	return p
}

// ID returns the job ID.
func (s *Stream) ID() string { return s.id }

// Next returns the next reply. Replies of an attempt older than one already
// seen are dropped. It blocks until a reply arrives, ctx is done or the stream
// is closed.
func (s *Stream) Next(ctx context.Context) (job.Reply, error) {
	return s.nextReply(ctx, false)
}

// errRearm is what nextReply returns to Follow when the stream's deadlines
// changed with nothing to read (wake).
var errRearm = errors.New("queue: deadlines changed")

// nextReply is Next; with rearm, it returns errRearm when woken by wake.
func (s *Stream) nextReply(ctx context.Context, rearm bool) (job.Reply, error) {
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			rep := s.buf[0]
			s.buf[0] = job.Reply{}
			s.buf = s.buf[1:]
			s.buffered -= len(rep.Data)
			s.mu.Unlock()
			return rep, nil
		}
		closed, rearmed := s.closed, rearm && s.rearm
		if rearmed {
			s.rearm = false
		}
		s.mu.Unlock()
		if closed {
			return job.Reply{}, ErrClosed
		}
		if rearmed {
			return job.Reply{}, errRearm
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return job.Reply{}, ctx.Err()
		}
	}
}

// ErrNotStarted is returned by Follow when no worker started the job in time.
var ErrNotStarted = errors.New("queue: no worker started the job in time")

// ErrSilent is returned by Follow when a started job sent nothing for longer
// than the silence bound.
var ErrSilent = errors.New("queue: the worker went silent")

// Follow calls fn with each reply of the stream until fn returns false. It
// returns ErrNotStarted when no worker has started the job within wait
// (counted from the call), ErrSilent when, once started, no reply came for
// silence (zero: no bound; heartbeats are not replies here), and otherwise
// the error of Next: ctx's error, or ErrClosed. Meanwhile it NAKs an attempt
// silent, heartbeats included, for the stall bound (Requester.SetStall).
func (s *Stream) Follow(ctx context.Context, wait, silence time.Duration, fn func(job.Reply) bool) error {
	startBy := time.Now().Add(wait)
	started := false
	last := time.Now() // the last reply handed to fn
	for {
		deadline, timeout := startBy, ErrNotStarted
		if started {
			deadline, timeout = time.Time{}, ErrSilent
			if silence > 0 {
				deadline = last.Add(silence)
			}
		}
		stallCheck := false
		if at, ok := s.stallAt(); ok && (deadline.IsZero() || at.Before(deadline)) {
			deadline, stallCheck = at, true
		}
		next, stop := ctx, context.CancelFunc(func() {})
		if !deadline.IsZero() {
			next, stop = context.WithDeadline(ctx, deadline)
		}
		rep, err := s.nextReply(next, true)
		stop()
		switch {
		case errors.Is(err, errRearm):
			continue
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) && stallCheck:
			s.nakIfStalled()
			s.checkLost()
			s.giveUpIfBroken()
			continue
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			return timeout
		case err != nil:
			return err
		}
		started = started || rep.Kind == job.KindStart
		last = time.Now()
		if !fn(rep) {
			return nil
		}
	}
}

// Cancel asks the worker running the job, if any, to stop it. A job that has
// not started yet is dropped when a worker takes it after its deadline.
func (s *Stream) Cancel() error {
	if err := s.r.nc.Publish(job.CancelSubject(s.r.id, s.id), nil); err != nil {
		return fmt.Errorf("cancel job %s: %w", s.id, err)
	}
	return nil
}

// Abandon is for a requester that no longer wants the job: it cancels the
// job where it runs and deletes it from the queue, so it is neither run nor
// redelivered later. Deleting a job that was already done is not an error.
// withdrawn reports that the job was still queued and deleted, so no worker
// ever took it (and none will write its audit record).
func (s *Stream) Abandon(ctx context.Context) (withdrawn bool, err error) {
	err = s.Cancel()
	if s.seq == 0 {
		return false, err
	}
	st, serr := s.r.q.js.Stream(ctx, job.Stream)
	if serr == nil {
		serr = st.DeleteMsg(ctx, s.seq)
		withdrawn = serr == nil
	}
	if serr != nil && !errors.Is(serr, jetstream.ErrMsgNotFound) {
		return false, errors.Join(err, fmt.Errorf("delete job %s: %w", s.id, serr))
	}
	return withdrawn, err
}

// Close stops delivery of the job's replies. It is idempotent.
func (s *Stream) Close() {
	s.r.mu.Lock()
	if s.r.streams[s.id] == s {
		delete(s.r.streams, s.id)
	}
	s.r.mu.Unlock()
	s.close()
}

func (s *Stream) close() {
	s.mu.Lock()
	s.closed = true
	s.buf, s.buffered = nil, 0
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
