package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchListSynopsis = `Usage: ollamaq batch list [--json]

Lists every batch the queue keeps (records and results last 7 days), oldest
first, with its state and counts.

Examples:
  ollamaq batch list
  ollamaq batch list --json | jq -r '.[] | select(.state == "done") | .id'
`

func cmdBatchList(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the batches as JSON")
	return func(ctx context.Context, e *env, _ []string) int {
		return e.withBatches(ctx, func(c *batch.Client) int {
			all, err := c.List(ctx)
			if err != nil {
				return e.batchFailed(err)
			}
			return printList(e, *asJSON, all, writeList, "no batches")
		})
	}
}

func writeList(w io.Writer, all []batch.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tREQUESTS\tDONE\tFAILED\tCANCELED\tEXPIRED\tCREATED\tFILE")
	for _, st := range all {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s ago\t%s\n", st.ID, st.State, st.Requests, st.Done, st.Failed, st.Canceled,
			st.Expired, age(now.Sub(st.CreatedAt)), st.File)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}
