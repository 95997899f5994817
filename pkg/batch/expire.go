package batch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// StatusExpired is the Ollamaq-Status of the error result that ends a line
// its batch's completion window left unfinished: written by whoever expires
// the batch, or by a worker that takes the line's job after its deadline,
// the end of the window. (Ollama itself never answers 408.)
const StatusExpired = http.StatusRequestTimeout

// isExpiry reports whether reply headers h are those of an expiry result.
func isExpiry(h nats.Header) bool {
	return h.Get(job.HeaderStatus) == strconv.Itoa(StatusExpired)
}

// jobDeadline returns the Ollamaq-Deadline and the Nats-TTL of a job of
// batch r queued at now (the client's clock, which records the batch's
// times): a worker that takes the job after the deadline, the end of the
// window, does not run it, and the job stream deletes it within a second
// after, whether or not a worker has it. The deadline is in real time, as
// far ahead as the window's end is from now. It fails with ErrExpired once
// the window has passed.
func jobDeadline(r *Record, now time.Time) (time.Time, time.Duration, error) {
	left := r.ExpiresAt.Sub(now)
	if left <= 0 {
		return time.Time{}, 0, fmt.Errorf("%w: %s expired at %s", ErrExpired, r.ID, r.ExpiresAt.Format(time.RFC3339))
	}
	return time.Now().Add(left).UTC(), left.Truncate(time.Second) + time.Second, nil
}

// errAsIs tells update to leave the record alone; the caller goes on.
var errAsIs = errors.New("batch: record as is")

// expire ends batch id, whose completion window has passed: the record
// becomes expired, every line without a result gets the error result
// batch_expired, running lines are told to stop, and the record keeps the
// final counts. The lines' jobs leave the job stream by their own TTL. A
// line that finished first keeps its result, and a batch whose lines all
// have one is done, not expired.
//
// Whoever reads the batch after its window does this (status, wait, results,
// list): nothing needs to stay up for it. Expiring twice is harmless (the
// results are published with a Nats-Msg-Id, and the first result of a line
// stands), so a reader that dies half way leaves an expired record without
// final counts, which the next reader completes.
func (c *Client) expire(ctx context.Context, id string) (Status, error) {
	r, _, err := c.get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	t, err := c.tallyAll(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if r.State == Queued && t.counts.Finished() >= r.Requests {
		return c.markDone(ctx, statusOf(r, t.counts, c.now()))
	}
	r, err = c.update(ctx, id, func(r *Record) error {
		switch {
		case r.State == Expired && r.Final == nil:
			return errAsIs // An earlier reader began; finish its work.
		case !r.due(c.now()):
			return errStale
		}
		now := c.now().UTC()
		r.State, r.ExpiredAt = Expired, &now
		return nil
	})
	switch {
	case errors.Is(err, errStale):
		return c.statusOfRecord(ctx, r) // Done, canceled or expired meanwhile.
	case err != nil && !errors.Is(err, errAsIs):
		return Status{}, err
	}

	msg := "batch expired: the request did not finish within the batch's completion window"
	if r.CompletionWindow != "" {
		msg += " of " + r.CompletionWindow
	}
	var inflight []jetstream.PubAckFuture
	flush := func() error {
		for _, f := range inflight {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("expire %s: %w", id, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		inflight = inflight[:0]
		return nil
	}
	for jid, st := range t.jobs {
		if st.phase.final() {
			continue
		}
		f, err := c.js.PublishMsgAsync(expiryMsg(id, jid, max(int(st.attempt), 1), msg),
			jetstream.WithMsgID(jid+"-expired"), jetstream.WithExpectStream(ResultsStream))
		if err != nil {
			return Status{}, fmt.Errorf("expire %s: %w", id, err)
		}
		inflight = append(inflight, f)
		if st.phase == phaseRunning {
			// Stop it: its answer would come after its result.
			if err := c.nc.Publish(CancelSubject(jid), nil); err != nil {
				return Status{}, fmt.Errorf("expire %s: cancel job %s: %w", id, jid, err)
			}
		}
		if len(inflight) >= window {
			if err := flush(); err != nil {
				return Status{}, err
			}
		}
	}
	if err := flush(); err != nil {
		return Status{}, err
	}

	// Count again: a line that finished while this ran keeps its answer.
	if t, err = c.tallyAll(ctx, id); err != nil {
		return Status{}, err
	}
	counts := t.counts
	r, err = c.update(ctx, id, func(r *Record) error {
		if r.State != Expired || r.Final != nil {
			return errStale
		}
		r.Final = &counts
		return nil
	})
	if err != nil && !errors.Is(err, errStale) {
		return Status{}, err
	}
	return statusOf(r, counts, c.now()), nil
}

// tallyAll counts batch id from every message of its results, in order, so
// that the first result of each line stands.
func (c *Client) tallyAll(ctx context.Context, id string) (*tally, error) {
	t := newTally()
	err := c.read(ctx, id, readHeaders, func(m jetstream.Msg) error {
		t.add(m.Subject(), m.Headers())
		return nil
	})
	return t, err
}

// expiryMsg is the error result of job jid of batch id, at attempt (the
// latest the results show, so that it ends the attempt that may be running).
func expiryMsg(id, jid string, attempt int, msg string) *nats.Msg {
	m := nats.NewMsg(ReplySubject(id, jid))
	m.Header = job.Reply{Kind: job.KindError, Job: jid, Attempt: attempt, Seq: job.SeqFinal,
		Status: StatusExpired, Error: msg}.Header()
	m.Header.Set(HeaderBatch, id)
	m.Data = job.ErrorBody(msg)
	return m
}
