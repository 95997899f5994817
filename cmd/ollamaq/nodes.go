package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
)

const nodesSynopsis = `Usage: ollamaq nodes [--json]

Lists the workers from the node bucket: state, Ollama version, installed and
loaded models, slots in use, jobs done and when each was last heard from.
A worker that stops reporting disappears within the bucket's TTL (15s).

Flags:
`

func cmdNodes(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the node records as JSON")
	if code, ok := parse(fs, args, e, nodesSynopsis); !ok {
		return code
	}
	nc, q, err := e.connect(ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "ollamaq: %v\n", err)
		return exitConnect
	}
	defer nc.Close()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	view, err := fleet.Watch(wctx, q.Nodes())
	if err != nil {
		fmt.Fprintf(e.stderr, "ollamaq: %v\n", err)
		return exitConnect
	}
	go func() { _ = view.Run(wctx) }() // Ends with wctx; we only need the initial contents.
	select {
	case <-view.Ready():
	case <-wctx.Done():
		fmt.Fprintln(e.stderr, "ollamaq: timed out reading the node bucket")
		return exitConnect
	}
	nodes := view.Nodes()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(nodes); err != nil {
			return exitFailed
		}
		return exitOK
	}
	writeNodes(e, nodes, time.Now())
	return exitOK
}

func writeNodes(e *env, nodes []*fleet.Node, now time.Time) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tOLLAMA\tMODELS\tLOADED\tSLOTS\tDONE\tFAILED\tLAST SEEN")
	for _, n := range nodes {
		var loaded []string
		for _, m := range n.Loaded {
			loaded = append(loaded, m.Name)
		}
		l := strings.Join(loaded, ",")
		if l == "" {
			l = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d/%d\t%d\t%d\t%s ago\n", n.ID, n.State, n.OllamaVersion, len(n.Models), l,
			n.SlotsBusy, n.SlotsTotal, n.JobsDone, n.JobsFailed, now.Sub(n.UpdatedAt).Round(time.Second))
	}
	if len(nodes) == 0 {
		fmt.Fprintln(e.stderr, "no workers are reporting")
	}
	_ = tw.Flush() // Output errors end the command anyway.
}
