package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchStatusSynopsis = `Usage: ollamaq batch status [--json] ID

Shows a batch: its file, state (submitting, queued, running, done, canceled
or expired), how many requests are queued, running, done, failed, canceled
or expired, its completion window, the models it uses and the first invalid
lines of its file. A batch whose completion window has passed is expired
here: its lines without a result get the error batch_expired.

Examples:
  ollamaq batch status batch_0123456789abcdefghijklmn
  ollamaq batch status --json nightly | jq .done
`

func cmdBatchStatus(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the status as JSON")
	return onBatch(fs, func(ctx context.Context, e *env, c *batch.Client, id string) int {
		st, err := c.Status(ctx, id)
		if err != nil {
			return e.batchFailed(err)
		}
		if *asJSON {
			return e.printJSON(st)
		}
		writeStatus(e.stdout, st, e.now())
		return exitOK
	})
}

func writeStatus(w io.Writer, st batch.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, k+":\t"+format+"\n", a...) }
	row("ID", "%s", st.ID)
	if st.File != "" {
		row("File", "%s", st.File)
	}
	row("State", "%s", st.State)
	row("Requests", "%d of %d lines (%d invalid)", st.Requests, st.Lines, st.Invalid)
	if st.State == batch.Submitting {
		row("Submitted", "%d so far", st.Submitted)
	}
	row("Waiting", "%d", st.Queued)
	row("Running", "%d", st.Running)
	row("Done", "%d", st.Done)
	row("Failed", "%d", st.Failed)
	row("Canceled", "%d", st.Canceled)
	row("Expired", "%d", st.Expired)
	if st.CompletionWindow != "" {
		row("Window", "%s", st.CompletionWindow)
	}
	row("Created at", "%s", when(st.CreatedAt, now))
	if st.SubmittedAt != nil {
		row("Submitted at", "%s", when(*st.SubmittedAt, now))
	}
	if st.CanceledAt != nil {
		row("Canceled at", "%s", when(*st.CanceledAt, now))
	}
	if st.CompletedAt != nil {
		row("Completed at", "%s", when(*st.CompletedAt, now))
	}
	switch {
	case st.ExpiredAt != nil:
		row("Expired at", "%s", when(*st.ExpiredAt, now))
	case st.ExpiresAt != nil && !st.Over():
		row("Expires at", "%s", when(*st.ExpiresAt, now))
	}
	models := make([]string, 0, len(st.Models))
	for m := range st.Models {
		models = append(models, m)
	}
	slices.Sort(models)
	for i, m := range models {
		k := ""
		if i == 0 {
			k = "Models:"
		}
		fmt.Fprintf(tw, "%s\t%s: %d\n", k, m, st.Models[m])
	}
	for i, le := range st.Errors {
		k := "Invalid lines:"
		if i > 0 {
			k = ""
		}
		fmt.Fprintf(tw, "%s\t%v\n", k, &le)
	}
	if n := st.Invalid - len(st.Errors); n > 0 && len(st.Errors) > 0 {
		fmt.Fprintf(tw, "\t... and %d more\n", n)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}

// when formats t in UTC with how long ago it was, or how long until.
func when(t, now time.Time) string {
	if t.After(now) {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.DateTime+" MST"), age(t.Sub(now)))
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.DateTime+" MST"), age(now.Sub(t)))
}
