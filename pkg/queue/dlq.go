package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// DeadLetter is a job given up on, as kept in OLLAMAQ_DLQ.
type DeadLetter struct {
	Seq      uint64      // sequence in OLLAMAQ_DLQ
	Subject  string      // the subject the job was queued on
	Header   nats.Header // the job's headers, with the Ollamaq-Dlq-* ones
	Body     []byte
	Reason   string
	Attempts int
	Worker   string
}

// JobID is the dead job's ID.
func (d DeadLetter) JobID() string { return d.Header.Get(job.HeaderJob) }

// Bury stores a job in the dead-letter stream with why it was given up. seq
// is the job's sequence in the job stream: burying is idempotent per queued
// job (Nats-Msg-Id dlq-<job id>-<seq>), so a worker and the advisory reaper
// may both try, while a requeued job that fails again is buried again.
func (q *Queue) Bury(ctx context.Context, subject string, seq uint64, h nats.Header, body []byte, reason string, attempts int, worker string) error {
	m := nats.NewMsg(job.DLQSubject(subject))
	for k, v := range h {
		if strings.HasPrefix(k, "Ollamaq-") {
			m.Header[k] = v
		}
	}
	m.Header.Set(job.HeaderDLQReason, reason)
	m.Header.Set(job.HeaderDLQAttempts, strconv.Itoa(attempts))
	m.Header.Set(job.HeaderDLQSubject, subject)
	if worker != "" {
		m.Header.Set(job.HeaderDLQWorker, worker)
	}
	m.Data = body
	id := h.Get(job.HeaderJob)
	if id == "" {
		id = h.Get(job.HeaderMsgID)
	}
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(fmt.Sprintf("dlq-%s-%d", id, seq)))
	}
	if _, err := q.js.PublishMsg(ctx, m, opts...); err != nil {
		return fmt.Errorf("bury job %s: %w", id, err)
	}
	return nil
}

// DeadLetters returns the dead letters in sequence order, at most limit
// (0: all).
func (q *Queue) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	s, err := q.js.Stream(ctx, job.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", job.DLQStream, err)
	}
	info := s.CachedInfo().State
	var out []DeadLetter
	for seq := info.FirstSeq; seq <= info.LastSeq && (limit == 0 || len(out) < limit) && info.Msgs > 0; seq++ {
		d, err := q.deadLetter(ctx, s, seq)
		if err == jetstream.ErrMsgNotFound {
			continue // Requeued or expired.
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// DeadLetterAt returns the dead letter with sequence seq.
func (q *Queue) DeadLetterAt(ctx context.Context, seq uint64) (DeadLetter, error) {
	s, err := q.js.Stream(ctx, job.DLQStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("open %s: %w", job.DLQStream, err)
	}
	return q.deadLetter(ctx, s, seq)
}

func (q *Queue) deadLetter(ctx context.Context, s jetstream.Stream, seq uint64) (DeadLetter, error) {
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	attempts, _ := strconv.Atoi(m.Header.Get(job.HeaderDLQAttempts)) // Missing means unknown: 0.
	return DeadLetter{Seq: seq, Subject: m.Header.Get(job.HeaderDLQSubject), Header: m.Header, Body: m.Data,
		Reason: m.Header.Get(job.HeaderDLQReason), Attempts: attempts, Worker: m.Header.Get(job.HeaderDLQWorker)}, nil
}

// Requeue puts dead letter seq back on its queue as a new delivery of the same
// job (its reply subject unchanged), then removes it from the dead letters.
func (q *Queue) Requeue(ctx context.Context, seq uint64) error {
	d, err := q.DeadLetterAt(ctx, seq)
	if err != nil {
		return err
	}
	if _, _, _, err := job.ParseJobSubject(d.Subject); err != nil {
		return fmt.Errorf("dead letter %d cannot be requeued: %w", seq, err)
	}
	m := nats.NewMsg(d.Subject)
	for k, v := range d.Header {
		// Not the deadline, nor Live: an operator who requeues a job wants
		// it run, whether or not its requester still listens.
		if strings.HasPrefix(k, "Ollamaq-") && !strings.HasPrefix(k, "Ollamaq-Dlq-") && k != job.HeaderDeadline && k != job.HeaderLive {
			m.Header[k] = v
		}
	}
	m.Data = d.Body
	if _, err := q.js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("requeue-%d-%s", seq, d.JobID()))); err != nil {
		return fmt.Errorf("requeue dead letter %d: %w", seq, err)
	}
	s, err := q.js.Stream(ctx, job.DLQStream)
	if err == nil {
		err = s.DeleteMsg(ctx, seq)
	}
	if err != nil {
		return fmt.Errorf("remove requeued dead letter %d: %w", seq, err)
	}
	return nil
}
