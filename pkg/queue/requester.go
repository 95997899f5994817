package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// ErrClosed is returned by Stream.Next after the stream or its requester was closed.
var ErrClosed = errors.New("queue: reply stream closed")

// Requester submits jobs and receives their replies through one wildcard
// subscription, ollamaq.reply.<id>.>, however many jobs are in flight: a
// subscription per job costs about eight times the throughput.
type Requester struct {
	id  string
	nc  *nats.Conn
	q   *Queue
	sub *nats.Subscription

	mu      sync.Mutex
	streams map[string]*Stream
	closed  bool
}

// NewRequester subscribes to the reply subjects of requester id, which must be
// a valid subject token and unique among running requesters.
func NewRequester(nc *nats.Conn, q *Queue, id string) (*Requester, error) {
	if !job.ValidToken(id) {
		return nil, fmt.Errorf("queue: requester id %q is not a subject token", id)
	}
	r := &Requester{id: id, nc: nc, q: q, streams: make(map[string]*Stream)}
	sub, err := nc.Subscribe(job.ReplyPrefix+"."+id+".>", r.route)
	if err != nil {
		return nil, fmt.Errorf("subscribe replies: %w", err)
	}
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		return nil, fmt.Errorf("subscribe replies: %w", err)
	}
	r.sub = sub
	return r, nil
}

// ID returns the requester id, the third token of its reply subjects.
func (r *Requester) ID() string { return r.id }

// route runs on the subscription's goroutine and hands each reply to its stream.
func (r *Requester) route(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	r.mu.Lock()
	s := r.streams[id]
	r.mu.Unlock()
	if s == nil {
		return // The requester gave up on this job.
	}
	rep, err := ParseReply(m)
	if err != nil {
		rep = Reply{Kind: job.KindError, Attempt: 1 << 30, Seq: 1, Status: 502,
			Error: "malformed reply from worker: " + err.Error()}
		rep.Data = ErrorBody(rep.Error)
	}
	s.push(rep)
}

// Submit publishes j with this requester's reply subject and returns the stream
// of its replies. The caller must Close the stream.
func (r *Requester) Submit(ctx context.Context, j Job) (*Stream, error) {
	j.Reply = job.ReplySubject(r.id, j.ID)
	s, err := r.open(j.ID)
	if err != nil {
		return nil, err
	}
	if _, err := r.q.Publish(ctx, j); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Command sends a node command (job.NodeRoutes) straight to one worker, not
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
	if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe replies: %w", err)
	}
	return nil
}

// Stream is the sequence of replies to one job. Next may be called from one
// goroutine at a time; Close and Cancel from any.
type Stream struct {
	r      *Requester
	id     string
	notify chan struct{}

	mu      sync.Mutex
	buf     []Reply
	attempt int
	closed  bool
}

func (s *Stream) push(rep Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || rep.Attempt < s.attempt {
		return // Output of an attempt that was superseded by a redelivery.
	}
	s.attempt = rep.Attempt
	s.buf = append(s.buf, rep)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// ID returns the job ID.
func (s *Stream) ID() string { return s.id }

// Next returns the next reply. Replies of an attempt older than one already
// seen are dropped. It blocks until a reply arrives, ctx is done or the stream
// is closed.
func (s *Stream) Next(ctx context.Context) (Reply, error) {
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			rep := s.buf[0]
			s.buf[0] = Reply{}
			s.buf = s.buf[1:]
			s.mu.Unlock()
			return rep, nil
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return Reply{}, ErrClosed
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Reply{}, ctx.Err()
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
	s.buf = nil
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
