package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// batchUsage and batchMore are the help of 'ollamaq batch', before and after
// the list of its commands.
const (
	batchUsage = `Runs files of requests through the queue as batch work, which workers take
only on capacity that interactive requests leave free. The results stay in
JetStream (7 days): submit, close the terminal, and collect them later or
from another machine.
`
	batchMore = `A batch has a completion window (24h unless submit is told otherwise): lines
without a result when it ends get the error batch_expired, and the batch
is expired.

A batch file is JSONL in the OpenAI Batch API input format:
  {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
   "body": {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}}
url is one of /v1/chat/completions, /v1/completions, /v1/embeddings,
/api/chat, /api/generate, /api/embed.

Example:
  ID=$(ollamaq batch submit requests.jsonl)
  ollamaq batch wait $ID
  ollamaq batch results $ID > results.jsonl
`
)

// withBatches connects, opens the batch client and does work with it. It
// returns work's exit code, or exitConnect when it cannot connect.
func (e *env) withBatches(ctx context.Context, work func(c *batch.Client) int) int {
	return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
		octx, cancel := context.WithTimeout(ctx, e.conn.timeout)
		c, err := batch.Open(octx, q, batch.WithClock(e.now))
		cancel()
		if err != nil {
			return e.fail(exitConnect, "%v", err)
		}
		return work(c)
	})
}

// batchFunc is a batch command's work on the batch its one argument names.
type batchFunc func(ctx context.Context, e *env, c *batch.Client, id string) int

// onBatch is a batch command that takes one batch ID (status, wait, results,
// cancel): it checks the ID, then opens the batches for work; fs is the
// command's, for its name.
func onBatch(fs *flag.FlagSet, work batchFunc) runFunc {
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "%s: want one batch ID (see --help)", fs.Name())
		}
		id := args[0]
		if !batch.ValidID(id) {
			return e.fail(exitFailed, "no such batch: %s (a batch ID is letters, digits, '-' and '_')", id)
		}
		return e.withBatches(ctx, func(c *batch.Client) int { return work(ctx, e, c, id) })
	}
}

// batchFailed prints an error of a batch operation and returns its exit code.
func (e *env) batchFailed(err error) int {
	switch {
	case errors.Is(err, batch.ErrNotFound):
		return e.fail(exitFailed, "%s (see 'ollamaq batch list')", strings.TrimPrefix(err.Error(), "batch: "))
	case errors.Is(err, context.Canceled):
		return e.fail(exitFailed, "interrupted")
	case errors.Is(err, context.DeadlineExceeded):
		return e.fail(exitFailed, "timed out")
	}
	var ce *connectError
	if errors.As(err, &ce) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoResponders) {
		return e.fail(exitConnect, "%v", err)
	}
	return e.fail(exitFailed, "%s", strings.TrimPrefix(err.Error(), "batch: "))
}

// detail says what else a progress display should show about st.
func detail(st batch.Status) string {
	var parts []string
	if st.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", st.Failed))
	}
	if st.Canceled > 0 {
		parts = append(parts, fmt.Sprintf("%d canceled", st.Canceled))
	}
	if st.Expired > 0 {
		parts = append(parts, fmt.Sprintf("%d expired", st.Expired))
	}
	if st.Running > 0 {
		parts = append(parts, fmt.Sprintf("%d running", st.Running))
	}
	return strings.Join(parts, ", ")
}

// follow shows a batch's progress until it is over or ctx ends.
func (e *env) follow(ctx context.Context, c *batch.Client, id string) (batch.Status, error) {
	st, err := c.Status(ctx, id)
	if err != nil || st.Over() {
		return st, err
	}
	p := e.newProgress(id, st.Requests, st.Finished())
	every := time.Second
	if e.terminal {
		every = 200 * time.Millisecond
	}
	every = min(every, e.every)
	st, err = c.Watch(ctx, id, every, func(st batch.Status) { p.update(st.Finished(), detail(st)) })
	p.finish(detail(st))
	return st, err
}

// summary is the one line that says how a batch ended.
func summary(st batch.Status) string {
	s := fmt.Sprintf("%s %s: %d done, %d failed", st.ID, st.State, st.Done, st.Failed)
	if st.Canceled > 0 {
		s += fmt.Sprintf(", %d canceled", st.Canceled)
	}
	if st.Expired > 0 {
		s += fmt.Sprintf(", %d expired (completion window %s)", st.Expired, st.CompletionWindow)
	}
	if left := st.Requests - st.Finished(); left > 0 {
		s += fmt.Sprintf(", %d without a result", left)
	}
	s += fmt.Sprintf(" (of %d requests)", st.Requests)
	if st.SubmittedAt != nil && st.CompletedAt != nil {
		s += fmt.Sprintf(" in %s", st.CompletedAt.Sub(*st.SubmittedAt).Round(time.Second))
	}
	return s
}

// endCode is the exit code of a command that waited for a batch: 0 only
// when every request was answered.
func endCode(st batch.Status) int {
	if st.State == batch.Done && st.Failed == 0 && st.Canceled == 0 {
		return exitOK
	}
	return exitFailed
}
