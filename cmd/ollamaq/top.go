package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const topSynopsis = `Usage: ollamaq top [--interval DURATION] [--count N] [--json]

Shows the nodes, their rates and the queues together, refreshed every
interval until interrupted. On a terminal the screen is redrawn in place;
otherwise each refresh is printed after a line with the time, or with --json
as one JSON object per line: {"time", "nodes", "rates", "queues"}.

Rates are per node and model: jobs and tokens per second, failed jobs and
model loads (jobs that found their model unloaded, so that Ollama loaded
it, swapping another out if memory was short), from the counts in two
records of the node, over the time between them (OVER, "seconds"). A worker
rewrites its record every heartbeat (3s) and within half a second of a
job's start or end, so that time is about the interval for a busy worker
and can be a heartbeat for an idle one. The first refresh has no rates yet;
a restarted worker has none until its next record. The queues show how long
the oldest waiting job has waited.

Examples:
  ollamaq top
  ollamaq top --interval 10s --json >> fleet.ndjson
  ollamaq top --json --count 3 | jq -c '.rates[] | {node, model, tokens_per_second}'
`

// snapshot is one refresh of top.
type snapshot struct {
	Time   time.Time     `json:"time"`
	Nodes  []*fleet.Node `json:"nodes"`
	Rates  []rateRow     `json:"rates"`
	Queues []queueRow    `json:"queues"`
}

func cmdTop(fs *flag.FlagSet) runFunc {
	interval := fs.Duration("interval", 2*time.Second, "time between refreshes, and about what the rates are over")
	count := fs.Int("count", 0, "stop after this many refreshes (0: until interrupted)")
	asJSON := fs.Bool("json", false, "print each refresh as one line of JSON")
	return func(ctx context.Context, e *env, _ []string) int {
		if *interval <= 0 || *count < 0 {
			return e.fail(exitUsage, "top takes a positive --interval and a --count of 0 or more (see --help)")
		}
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {

			// The node view stays current between refreshes.
			vctx, stopView := context.WithCancel(ctx)
			view, err := fleet.Watch(vctx, q.Nodes())
			if err != nil {
				stopView()
				return e.fail(exitConnect, "%v", err)
			}
			var wg sync.WaitGroup
			wg.Go(func() { _ = view.Run(vctx) }) // Ends when top does.
			defer func() { stopView(); wg.Wait() }()
			select {
			case <-view.Ready():
			case <-time.After(e.conn.timeout):
				return e.fail(exitConnect, "timed out reading the node bucket")
			case <-ctx.Done():
				return exitOK
			}

			tick := time.NewTicker(*interval)
			defer tick.Stop()
			rates := newRater()
			for n := 1; ; n++ {
				nodes := view.Nodes()
				rs := rates.update(nodes)
				if rs == nil {
					rs = []rateRow{} // [] in JSON, not null.
				}
				rows, err := readQueues(ctx, q, nodes)
				if err != nil {
					if ctx.Err() != nil {
						return exitOK
					}
					return e.fail(exitConnect, "%v", err)
				}
				snap := snapshot{Time: e.now().UTC(), Nodes: nodes, Rates: rs, Queues: rows}
				if err := e.drawTop(snap, *asJSON); err != nil {
					return e.fail(exitFailed, "write output: %v", err)
				}
				if n == *count {
					return exitOK
				}
				select {
				case <-ctx.Done():
					return exitOK // Interrupted: the normal way to leave top.
				case <-tick.C:
				}
			}
		})
	}
}

func (e *env) drawTop(s snapshot, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	if e.screen {
		fmt.Fprint(e.stdout, "\x1b[H\x1b[2J") // Home and clear: redraw in place.
		fmt.Fprintf(e.stdout, "ollamaq top  %s  (Ctrl-C to quit)\n\n", s.Time.Format(time.DateTime+" MST"))
	} else {
		fmt.Fprintf(e.stdout, "--- %s\n", s.Time.Format(time.RFC3339))
	}
	writeNodes(e.stdout, s.Nodes, s.Time)
	fmt.Fprintln(e.stdout)
	writeRates(e.stdout, s.Rates)
	fmt.Fprintln(e.stdout)
	writeQueues(e.stdout, s.Queues, s.Time)
	if !e.screen {
		fmt.Fprintln(e.stdout)
	}
	return nil
}
