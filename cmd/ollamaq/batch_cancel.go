package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchCancelSynopsis = `Usage: ollamaq batch cancel [flags] ID

Cancels a batch: workers drop its queued lines when they come to them, and
its running lines are stopped; each gets the error batch_cancelled in the
results, next to the results of the lines that finished before. Waits (up to
--wait) until no line of the batch runs any more. A canceled batch cannot be
resumed; submit the file under another --id to run it again.

Examples:
  ollamaq batch cancel batch_0123456789abcdefghijklmn
`

func cmdBatchCancel(fs *flag.FlagSet) runFunc {
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for running lines to stop")
	asJSON := fs.Bool("json", false, "print the status after the cancel as JSON")
	return onBatch(fs, func(ctx context.Context, e *env, c *batch.Client, id string) int {
		cctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		st, err := c.Cancel(cctx, id, min(2*time.Second, *wait))
		switch {
		case errors.Is(err, batch.ErrFinished):
			if st.State == batch.Expired {
				return e.fail(exitFailed, "%s is already expired: nothing to cancel", id)
			}
			return e.fail(exitFailed, "%s is already done: nothing to cancel", id)
		case err != nil && cctx.Err() != nil && ctx.Err() == nil:
			fmt.Fprintf(e.stderr, "canceled %s, but %d lines still run after %s\n", id, st.Running, *wait)
			return exitFailed
		case err != nil:
			return e.batchFailed(err)
		}
		if *asJSON {
			if code := e.printJSON(st); code != exitOK {
				return code
			}
		}
		fmt.Fprintf(e.stderr, "canceled %s: %d done and %d failed before, %d canceled", id, st.Done, st.Failed, st.Canceled)
		if left := st.Requests - st.Finished(); left > 0 {
			fmt.Fprintf(e.stderr, "; the other %d are dropped as workers come to them", left)
		}
		fmt.Fprintln(e.stderr)
		return exitOK
	})
}
