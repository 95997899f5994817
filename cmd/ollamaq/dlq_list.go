package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/queue"
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
	limit := fs.Int("limit", 100, "list at most this many (0: all)")
	return readList(fs, "the dead letters", func(ctx context.Context, _ *env, q *queue.Queue) ([]deadLetterRow, error) {
		ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
		defer cancel()
		dead, err := q.DeadLetters(ctx, *limit)
		if err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		rows := make([]deadLetterRow, len(dead))
		for i, d := range dead {
			rows[i] = toRow(d, false)
		}
		return rows, nil
	}, writeDeadLetters, "no dead letters")
}
