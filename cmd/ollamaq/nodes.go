package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const nodesSynopsis = `Usage: ollamaq nodes [--json]

Lists the workers from the node bucket: state, Ollama version, installed and
loaded models, slots in use, jobs done and when each was last heard from.
A worker that stops reporting disappears within the bucket's TTL (15s).

Examples:
  ollamaq nodes
  ollamaq nodes --json | jq '.[] | select(.state != "ready") | .id'
`

func cmdNodes(fs *flag.FlagSet) runFunc {
	return readList(fs, "the node records", func(ctx context.Context, e *env, q *queue.Queue) ([]*fleet.Node, error) {
		return readNodes(ctx, q, e.conn.timeout)
	}, writeNodes, "no workers are reporting")
}

// readNodes returns the node records in the bucket now.
func readNodes(ctx context.Context, q *queue.Queue, timeout time.Duration) ([]*fleet.Node, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	view, err := fleet.Watch(wctx, q.Nodes())
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = view.Run(wctx) }() // Ends with wctx; only the initial contents matter.
	defer func() { cancel(); <-done }()
	select {
	case <-view.Ready():
		return view.Nodes(), nil
	case <-wctx.Done():
		return nil, errors.New("timed out reading the node bucket")
	}
}

func writeNodes(w io.Writer, nodes []*fleet.Node, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tOLLAMA\tMODELS\tLOADED\tSLOTS\tRESERVED\tDONE\tFAILED\tLOADS\tLAST SEEN")
	for _, n := range nodes {
		var loaded []string
		for _, m := range n.Loaded {
			loaded = append(loaded, m.Name)
		}
		l := strings.Join(loaded, ",")
		if l == "" {
			l = "-"
		}
		var loads int64
		for _, c := range n.Served {
			loads += c.Loads
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%s ago\n", n.ID, n.State, n.OllamaVersion, len(n.Models), l,
			n.SlotsBusy, n.SlotsTotal, n.SlotsReserved, n.JobsDone, n.JobsFailed, loads, age(now.Sub(n.UpdatedAt)))
	}
	_ = tw.Flush() // Output errors end the command anyway.
}

// age formats a duration to the second; never negative (clocks differ).
func age(d time.Duration) string {
	return max(d, 0).Round(time.Second).String()
}
