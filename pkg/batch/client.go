package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Errors of the batch operations; match them with errors.Is.
var (
	// ErrNotFound is returned for a batch ID the bucket does not hold.
	ErrNotFound = errors.New("batch: no such batch")
	// ErrUnsupported is returned by Open on a deployment set up before
	// batches existed.
	ErrUnsupported = errors.New("batch: this deployment has no batch support")
	// ErrDuplicateIDs is returned by Submit when custom_ids repeat in the file;
	// nothing is queued.
	ErrDuplicateIDs = errors.New("batch: repeated custom_id")
	// ErrInvalidLines is returned by a strict Submit when a line is not a valid
	// request; nothing is queued.
	ErrInvalidLines = errors.New("batch: invalid lines")
	// ErrEmpty is returned by Submit for a file without a valid request.
	ErrEmpty = errors.New("batch: no valid request in the file")
	// ErrConflict is returned by Submit when the batch ID already names a
	// batch of another file.
	ErrConflict = errors.New("batch: the batch ID names another file")
	// ErrCanceled is returned by Submit for a batch that was canceled.
	ErrCanceled = errors.New("batch: the batch was canceled")
	// ErrFinished is returned by Cancel for a batch that is already done or
	// expired.
	ErrFinished = errors.New("batch: the batch is already done")
	// ErrExpired is returned by Submit for a batch whose completion window
	// has passed: its unqueued lines are not queued any more.
	ErrExpired = errors.New("batch: the batch's completion window has passed")
	// ErrWindows is returned by Submit when lines of the file ask for
	// different completion windows; nothing is queued.
	ErrWindows = errors.New("batch: lines ask for different completion windows")
)

// Client submits, inspects and cancels batches. It is safe for concurrent use.
type Client struct {
	q       *queue.Queue
	js      jetstream.JetStream
	nc      *nats.Conn
	kv      jetstream.KeyValue
	results jetstream.Stream
	jobs    jetstream.Stream
	now     func() time.Time
}

// Option adjusts a Client.
type Option func(*Client) error

// WithClock makes the client read the time from now, for the times it
// records (tests use a fixed clock).
func WithClock(now func() time.Time) Option {
	return func(c *Client) error {
		if now == nil {
			return errors.New("batch: WithClock: nil clock")
		}
		c.now = now
		return nil
	}
}

// Open returns a client for the batches of the queue q. It fails with
// ErrUnsupported when the batch bucket or the results stream is missing.
func Open(ctx context.Context, q *queue.Queue, opts ...Option) (*Client, error) {
	c := &Client{q: q, js: q.JetStream(), nc: q.JetStream().Conn(), kv: q.Batches(), now: time.Now}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.kv == nil {
		return nil, fmt.Errorf("%w: the bucket %s does not exist (restart a dispatcher or worker of this version to create it)", ErrUnsupported, Bucket)
	}
	var err error
	if c.results, err = c.js.Stream(ctx, ResultsStream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w: the stream %s does not exist (restart a dispatcher or worker of this version to create it)", ErrUnsupported, ResultsStream)
		}
		return nil, fmt.Errorf("look up stream %s: %w", ResultsStream, err)
	}
	if c.jobs, err = c.js.Stream(ctx, job.Stream); err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", job.Stream, err)
	}
	return c, nil
}

// Served reports whether some worker has served the canonical model: if none
// has, the model's jobs wait in the queue until a worker that has it starts.
func (c *Client) Served(ctx context.Context, model string) (bool, error) {
	return c.q.HasConsumer(ctx, model)
}
