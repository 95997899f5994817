package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// follower keeps counts of a batch's jobs current from the results stream.
type follower struct {
	mu sync.Mutex
	t  *tally
	cc jetstream.ConsumeContext
}

// follow starts counting the results of batch id: each job's last message,
// then every new one. onChange, if set, runs on the consumer's goroutine for
// every job whose state changed.
func (c *Client) follow(ctx context.Context, id string, onChange func(jid string, st jobState)) (*follower, error) {
	cons, err := c.js.OrderedConsumer(ctx, ResultsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{resultsFilter(id)}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		HeadersOnly: true, MaxResetAttempts: 5})
	if err != nil {
		return nil, fmt.Errorf("follow results of %s: %w", id, err)
	}
	f := &follower{t: newTally()}
	f.cc, err = cons.Consume(func(m jetstream.Msg) {
		f.mu.Lock()
		jid, st, changed := f.t.add(m.Subject(), m.Headers())
		f.mu.Unlock()
		if changed && onChange != nil {
			onChange(jid, st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("follow results of %s: %w", id, err)
	}
	return f, nil
}

func (f *follower) counts() Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t.counts
}

// stop ends the consumer and waits for its handler to return.
func (f *follower) stop() {
	f.cc.Stop()
	<-f.cc.Closed()
}

// Watch follows batch id live and calls fn with its status every interval,
// until the batch is done, canceled or expired (fn then sees the final
// status; Watch expires a batch whose completion window passes meanwhile)
// or ctx ends. It returns the last status.
func (c *Client) Watch(ctx context.Context, id string, every time.Duration, fn func(Status)) (Status, error) {
	r, _, err := c.get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if r.Final != nil && (r.State == Done || r.State == Expired) {
		st := statusOf(r, *r.Final, c.now())
		fn(st)
		return st, nil
	}
	kw, err := c.kv.Watch(ctx, id)
	if err != nil {
		return Status{}, fmt.Errorf("watch batch %s: %w", id, err)
	}
	defer func() { _ = kw.Stop() }() // Stopping a watcher only unsubscribes.
	f, err := c.follow(ctx, id, nil)
	if err != nil {
		return Status{}, err
	}
	defer f.stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := statusOf(r, Counts{}, c.now())
	updates := kw.Updates()
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case e, ok := <-updates:
			if !ok {
				updates = nil // The watcher ended; the counts still come.
				continue
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				var nr Record
				if err := json.Unmarshal(e.Value(), &nr); err == nil {
					r = &nr
				}
			}
			continue
		case <-tick.C:
		}
		last = statusOf(r, f.counts(), c.now())
		if last.Over() {
			last, err = c.settle(ctx, r, last)
			fn(last)
			return last, err
		}
		fn(last)
	}
}

// Cancel cancels batch id. Its record says so at once, and workers drop its
// queued jobs when they take them (each answers error 499); its running jobs
// are told to stop through their cancel subjects. Cancel then follows the
// batch until no job of it runs and at least settle has passed (a worker
// that took a job just before the cancel may start it a moment later), or
// until ctx ends. It returns ErrFinished for a batch that is already done
// or expired.
func (c *Client) Cancel(ctx context.Context, id string, settle time.Duration) (Status, error) {
	r, err := c.update(ctx, id, func(r *Record) error {
		switch r.State {
		case Done, Expired:
			return ErrFinished
		case Canceled:
			return nil // Again: stop whatever still runs.
		}
		now := c.now().UTC()
		r.State, r.CanceledAt = Canceled, &now
		return nil
	})
	if errors.Is(err, ErrFinished) {
		st, serr := c.statusOfRecord(ctx, r)
		return st, errors.Join(fmt.Errorf("%w: %s", ErrFinished, id), serr)
	}
	if err != nil {
		return Status{}, err
	}
	since := time.Now()
	var sendErr error
	var mu sync.Mutex
	f, err := c.follow(ctx, id, func(jid string, st jobState) {
		if st.phase != phaseRunning {
			return
		}
		if err := c.nc.Publish(CancelSubject(jid), nil); err != nil {
			mu.Lock()
			sendErr = fmt.Errorf("cancel job %s: %w", jid, err)
			mu.Unlock()
		}
	})
	if err != nil {
		return Status{}, err
	}
	defer f.stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st := statusOf(r, f.counts(), c.now())
		mu.Lock()
		err := sendErr
		mu.Unlock()
		if err != nil {
			return st, err
		}
		if st.Running == 0 && time.Since(since) >= settle {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-tick.C:
		}
	}
}
