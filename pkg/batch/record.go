package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// State is where a batch is in its life, as its record says.
type State string

// States of a batch record. Derived states that only a look at the results
// can tell (running) are in Status.
const (
	Submitting State = "submitting"      // lines are being queued
	Queued     State = "queued"          // every line is queued
	Canceled   State = job.BatchCanceled // canceled: queued lines are dropped
	Done       State = "done"            // every line has its result
	Expired    State = "expired"         // the completion window passed first: the lines without a result got batch_expired
)

// rank orders states: a record never moves back.
func (s State) rank() int {
	switch s {
	case Submitting:
		return 0
	case Queued:
		return 1
	}
	return 2 // Done, Canceled and Expired are final.
}

// Record is a batch's entry in the bucket ollamaq_batches, under its ID.
type Record struct {
	ID       string         `json:"id"`
	File     string         `json:"file,omitempty"`
	Digest   string         `json:"digest"` // hex SHA-256 of the input file
	State    State          `json:"state"`
	Lines    int            `json:"lines"`    // lines in the file
	Requests int            `json:"requests"` // valid request lines: the batch's jobs
	Invalid  int            `json:"invalid"`  // lines skipped as invalid
	Errors   []LineError    `json:"errors,omitempty"`
	Models   map[string]int `json:"models"` // requests per canonical model

	// Submitted counts the requests queued so far; every request on a line
	// before NextLine is queued. No request after Reserved was queued yet:
	// a submitter that resumes checks only the lines in between.
	Submitted int `json:"submitted"`
	NextLine  int `json:"next_line"`
	Reserved  int `json:"reserved"`

	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	SubmittedAt *time.Time `json:"submitted_at,omitempty"`
	CanceledAt  *time.Time `json:"canceled_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// CompletionWindow is how long the batch has to finish ("24h"), and
	// ExpiresAt when it runs out: CreatedAt plus the window. Records made
	// before windows existed have neither and never expire.
	CompletionWindow string     `json:"completion_window,omitempty"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	ExpiredAt        *time.Time `json:"expired_at,omitempty"`
	// Final holds the outcome once the batch is done or expired, so listing
	// many old batches need not read their results.
	Final *Counts `json:"final,omitempty"`
}

// due reports whether the batch's completion window has passed at now
// while it was still being submitted or run.
func (r *Record) due(now time.Time) bool {
	return (r.State == Submitting || r.State == Queued) && r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)
}

// get returns a batch record and its revision.
func (c *Client) get(ctx context.Context, id string) (*Record, uint64, error) {
	if !ValidID(id) {
		return nil, 0, fmt.Errorf("%w: %q is not a batch ID", ErrNotFound, id)
	}
	e, err := c.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get batch %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("decode batch %s: %w", id, err)
	}
	return &r, e.Revision(), nil
}

// Get returns the record of batch id, or ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (*Record, error) {
	r, _, err := c.get(ctx, id)
	return r, err
}

// create stores a new record; ok is false when the key already exists.
func (c *Client) create(ctx context.Context, r *Record) (ok bool, err error) {
	b, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("encode batch %s: %w", r.ID, err)
	}
	_, err = c.kv.Create(ctx, r.ID, b)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("create batch %s: %w", r.ID, err)
	}
	return true, nil
}

// update applies fn to the current record and stores the result if nothing
// else changed the record meanwhile, retrying with the newer record if
// something did. fn may return an error to give up.
func (c *Client) update(ctx context.Context, id string, fn func(*Record) error) (*Record, error) {
	for {
		r, rev, err := c.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(r); err != nil {
			return r, err
		}
		r.UpdatedAt = c.now().UTC()
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode batch %s: %w", id, err)
		}
		_, err = c.kv.Update(ctx, id, b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue // Someone else wrote the record: apply fn to theirs.
		}
		if err != nil {
			return nil, fmt.Errorf("update batch %s: %w", id, err)
		}
		return r, nil
	}
}
