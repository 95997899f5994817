package batch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Running is the state Status reports for a queued batch whose jobs have
// started; records never hold it.
const Running State = "running"

// Status is a batch's record together with what its results say.
type Status struct {
	ID        string `json:"id"`
	File      string `json:"file,omitempty"`
	State     State  `json:"state"` // submitting, queued, running, done, canceled or expired
	Lines     int    `json:"lines"`
	Requests  int    `json:"requests"`
	Invalid   int    `json:"invalid"`
	Submitted int    `json:"submitted"` // requests queued so far
	Counts
	Models      map[string]int `json:"models"`
	Errors      []LineError    `json:"errors,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	SubmittedAt *time.Time     `json:"submitted_at,omitempty"`
	CanceledAt  *time.Time     `json:"canceled_at,omitempty"`
	CompletedAt *time.Time     `json:"completed_at,omitempty"`
	// The completion window and when it ends (ends, for an expired batch).
	CompletionWindow string     `json:"completion_window,omitempty"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	ExpiredAt        *time.Time `json:"expired_at,omitempty"`
}

// Complete reports whether every request of the batch has its result.
func (s Status) Complete() bool { return s.State == Done }

// Over reports whether nothing more will happen to the batch by itself: it
// is done, it was canceled, or its completion window passed.
func (s Status) Over() bool { return s.State == Done || s.State == Canceled || s.State == Expired }

// statusOf combines a record with the counts from its results, at now: a
// batch whose requests all have a result is done; one whose completion
// window passed before is expired.
func statusOf(r *Record, c Counts, now time.Time) Status {
	s := Status{ID: r.ID, File: r.File, State: r.State, Lines: r.Lines, Requests: r.Requests, Invalid: r.Invalid,
		Submitted: r.Submitted, Counts: c, Models: r.Models, Errors: r.Errors, CreatedAt: r.CreatedAt,
		SubmittedAt: r.SubmittedAt, CanceledAt: r.CanceledAt, CompletedAt: r.CompletedAt,
		CompletionWindow: r.CompletionWindow, ExpiresAt: r.ExpiresAt, ExpiredAt: r.ExpiredAt}
	switch {
	case r.State == Queued && c.Finished() >= r.Requests:
		s.State = Done
	case r.due(now):
		s.State = Expired
	case r.State == Queued && (c.Running > 0 || c.Finished() > 0):
		s.State = Running
	}
	return s
}

// Status returns the state of batch id and counts of its requests, read
// from its record and its results. A batch found done is recorded as done.
func (c *Client) Status(ctx context.Context, id string) (Status, error) {
	r, _, err := c.get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	return c.statusOfRecord(ctx, r)
}

func (c *Client) statusOfRecord(ctx context.Context, r *Record) (Status, error) {
	if r.Final != nil && (r.State == Done || r.State == Expired) {
		return statusOf(r, *r.Final, c.now()), nil
	}
	t := newTally()
	err := c.read(ctx, r.ID, readLast, func(m jetstream.Msg) error {
		t.add(m.Subject(), m.Headers())
		return nil
	})
	if err != nil {
		return Status{}, err
	}
	return c.settle(ctx, r, statusOf(r, t.counts, c.now()))
}

// settle records what st, the status of record r, found: a batch done, or
// one whose completion window passed, which it expires.
func (c *Client) settle(ctx context.Context, r *Record, st Status) (Status, error) {
	switch {
	case st.State == Done:
		return c.markDone(ctx, st)
	case st.State == Expired && r.Final == nil:
		return c.expire(ctx, r.ID)
	}
	return st, nil
}

// errStale stops an update whose premise no longer holds.
var errStale = errors.New("batch: record changed")

// markDone records a batch that st shows done, so later reads need not count
// its results again, and returns st with the completion time.
func (c *Client) markDone(ctx context.Context, st Status) (Status, error) {
	if st.State != Done || st.CompletedAt != nil {
		return st, nil
	}
	counts := st.Counts
	r, err := c.update(ctx, st.ID, func(r *Record) error {
		if r.State != Queued {
			return errStale
		}
		now := c.now().UTC()
		r.State, r.CompletedAt, r.Final = Done, &now, &counts
		return nil
	})
	switch {
	case errors.Is(err, errStale):
		return statusOf(r, counts, c.now()), nil
	case err != nil:
		return st, err
	}
	st.CompletedAt = r.CompletedAt
	return st, nil
}

// List returns the status of every batch in the bucket, oldest first.
func (c *Client) List(ctx context.Context) ([]Status, error) {
	w, err := c.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	defer func() { _ = w.Stop() }() // Stopping a watcher only unsubscribes.
	var records []*Record
	for e := range w.Updates() {
		if e == nil {
			break // The bucket's current contents are all in.
		}
		var r Record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return nil, fmt.Errorf("decode batch %s: %w", e.Key(), err)
		}
		records = append(records, &r)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(records))
	for _, r := range records {
		st, err := c.statusOfRecord(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// readMode says which messages of a batch's results read delivers.
type readMode int

const (
	readAll     readMode = iota // every message, with its body
	readLast                    // each job's last message, headers only: enough to count, a quarter of the messages
	readHeaders                 // every message, headers only
)

// read delivers the messages of batch id in the results stream to fn, in
// stream order, and returns once fn has had every message stored when read
// began.
func (c *Client) read(ctx context.Context, id string, mode readMode, fn func(jetstream.Msg) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{resultsFilter(id)}, MaxResetAttempts: 5}
	switch mode {
	case readLast:
		cfg.DeliverPolicy, cfg.HeadersOnly = jetstream.DeliverLastPerSubjectPolicy, true
	case readHeaders:
		cfg.HeadersOnly = true
	}
	cons, err := c.js.OrderedConsumer(ctx, ResultsStream, cfg)
	if err != nil {
		return fmt.Errorf("read results of %s: %w", id, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read results of %s: %w", id, err)
	}
	defer it.Stop()
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read results of %s: %w", id, err)
		}
		if err := fn(m); err != nil {
			return err
		}
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			return nil
		}
	}
}
