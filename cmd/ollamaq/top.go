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

Shows the nodes and the queues together, refreshed every interval until
interrupted. On a terminal the screen is redrawn in place; otherwise each
refresh is printed after a line with the time, or with --json as one JSON
object per line: {"time", "nodes", "queues"}.

Examples:
  ollamaq top
  ollamaq top --interval 10s --json >> fleet.ndjson
`

// snapshot is one refresh of top.
type snapshot struct {
	Time   time.Time     `json:"time"`
	Nodes  []*fleet.Node `json:"nodes"`
	Queues []queueRow    `json:"queues"`
}

func cmdTop(fs *flag.FlagSet) runFunc {
	interval := fs.Duration("interval", 2*time.Second, "time between refreshes")
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
			for n := 1; ; n++ {
				nodes := view.Nodes()
				rows, err := readQueues(ctx, q, nodes)
				if err != nil {
					if ctx.Err() != nil {
						return exitOK
					}
					return e.fail(exitConnect, "%v", err)
				}
				snap := snapshot{Time: e.now().UTC(), Nodes: nodes, Queues: rows}
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
	writeQueues(e.stdout, s.Queues, s.Time)
	if !e.screen {
		fmt.Fprintln(e.stdout)
	}
	return nil
}
