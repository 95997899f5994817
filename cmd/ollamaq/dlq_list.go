package main

import (
	"context"
	"flag"
	"fmt"
)

const dlqListSynopsis = `Usage: ollamaq dlq list [--json] [--limit N]

Lists the dead letters in the order they were given up on: sequence number,
job, model, class, route, attempts, the worker that had it last and why it
was given up on.

Examples:
  ollamaq dlq list
  ollamaq dlq list --json | jq -r '.[].seq' | xargs ollamaq dlq requeue
`

func cmdDLQList(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the dead letters as JSON")
	limit := fs.Int("limit", 100, "list at most this many (0: all)")
	return func(ctx context.Context, e *env, _ []string) int {
		nc, q, err := e.connect(ctx)
		if err != nil {
			return e.connectFailed(err)
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
		defer cancel()
		dead, err := q.DeadLetters(ctx, *limit)
		if err != nil {
			return e.fail(exitConnect, "read dead letters: %v", err)
		}
		rows := make([]deadLetterRow, len(dead))
		for i, d := range dead {
			rows[i] = toRow(d, false)
		}
		if *asJSON {
			return e.printJSON(rows)
		}
		writeDeadLetters(e.stdout, rows)
		if len(rows) == 0 {
			fmt.Fprintln(e.stderr, "no dead letters")
		}
		return exitOK
	}
}
