package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchWaitSynopsis = `Usage: ollamaq batch wait [flags] ID

Follows a batch until every request has its result, showing done, failed,
rate and time left: a progress bar on a terminal, a line every 10 seconds
otherwise. It can be started, stopped and started again at any time, from
any machine: the batch runs without it.

Exit status: 0 when every request was answered; 1 when some failed, the
batch was canceled, or --for passed first.

Examples:
  ollamaq batch wait batch_0123456789abcdefghijklmn
  ollamaq batch wait --for 1h nightly && ollamaq batch results nightly > out.jsonl
`

func cmdBatchWait(fs *flag.FlagSet) runFunc {
	limit := fs.Duration("for", 0, "give up after this long (0: never)")
	asJSON := fs.Bool("json", false, "print the final status as JSON")
	return onBatch(fs, func(ctx context.Context, e *env, c *batch.Client, id string) int {
		wctx := ctx
		if *limit > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, *limit)
			defer cancel()
		}
		st, err := e.follow(wctx, c, id)
		switch {
		case err != nil && wctx.Err() != nil && ctx.Err() == nil:
			fmt.Fprintln(e.stderr, summary(st))
			return e.fail(exitFailed, "%s is not done after %s", id, *limit)
		case err != nil:
			return e.batchFailed(err)
		}
		if *asJSON {
			if code := e.printJSON(st); code != exitOK {
				return code
			}
		}
		fmt.Fprintln(e.stderr, summary(st))
		return endCode(st)
	})
}
