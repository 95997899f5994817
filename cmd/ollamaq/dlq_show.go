package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const dlqShowSynopsis = `Usage: ollamaq dlq show [--json] SEQ

Shows the dead letter with sequence number SEQ (see 'ollamaq dlq list'): the
job, its subject and route, attempts, the worker that had it last, why it
was given up on, and the request body; with --json its headers as well.

Examples:
  ollamaq dlq show 12
  ollamaq dlq show --json 12 | jq -r .body
`

func cmdDLQShow(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the dead letter as JSON")
	return func(ctx context.Context, e *env, args []string) int {
		seqs, code, ok := e.seqs(args)
		if !ok {
			return code
		}
		if len(seqs) != 1 {
			return e.fail(exitUsage, "dlq show: want one SEQ (see --help)")
		}
		seq := seqs[0]
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
			defer cancel()
			d, err := q.DeadLetterAt(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return e.fail(exitFailed, "no dead letter %d", seq)
			}
			if err != nil {
				return e.fail(exitConnect, "read dead letter %d: %v", seq, err)
			}
			row := toRow(d, true)
			if *asJSON {
				return e.printJSON(row)
			}
			fmt.Fprintf(e.stdout, "seq:      %d\njob:      %s\nsubject:  %s\nroute:    %s\nattempts: %d\nworker:   %s\nreason:   %s\nbody:     %s\n",
				row.Seq, row.Job, row.Subject, row.Route, row.Attempts, row.Worker, row.Reason, row.Body)
			return exitOK
		})
	}
}
