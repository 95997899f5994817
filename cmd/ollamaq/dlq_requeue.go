package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/queue"
)

const dlqRequeueSynopsis = `Usage: ollamaq dlq requeue SEQ...

Puts each dead letter SEQ back on its model's queue as it was (same job, same
reply subject) and removes it from the dead letters. A job that fails again
lands there again, with a new sequence number.

Exit status: 0 when every one was requeued, 1 when one was not.

Examples:
  ollamaq dlq requeue 12 13
  ollamaq dlq list --json | jq -r '.[].seq' | xargs ollamaq dlq requeue
`

func cmdDLQRequeue(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, args []string) int {
		seqs, code, ok := e.seqs(args)
		if !ok {
			return code
		}
		if len(seqs) == 0 {
			return e.fail(exitUsage, "dlq requeue: want one SEQ or more (see --help)")
		}
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
			defer cancel()
			code := exitOK
			for _, seq := range seqs {
				if err := q.Requeue(ctx, seq); err != nil {
					code = e.fail(exitFailed, "requeue %d: %v", seq, err)
					continue
				}
				fmt.Fprintf(e.stdout, "requeued %d\n", seq)
			}
			return code
		})
	}
}
