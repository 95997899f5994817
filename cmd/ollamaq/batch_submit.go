package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchSubmitSynopsis = `Usage: ollamaq batch submit [flags] FILE

Queues every line of FILE, a JSONL file in the OpenAI Batch API input format,
as a batch job, and prints the batch ID on stdout. The file is read twice and
never held in memory: first to check it, then to queue it.

A line that is not a valid request (malformed JSON, unknown url, no
custom_id or model) is reported with its number and skipped; --strict
refuses the whole file instead. custom_ids that repeat are refused before
anything is queued.

The batch ID derives from the file's content unless --id sets it: submitting
the same file again, or again after an interrupted submission, queues no
line twice and resumes where the first one stopped.

The batch has a completion window from its creation, as in OpenAI's Batch
API: --completion-window, else the "completion_window" its lines give, else
24h. Lines without a result when it ends (a model nobody serves, say) get the
error batch_expired and the batch is expired.

Examples:
  ollamaq batch submit requests.jsonl
  ID=$(ollamaq batch submit --strict requests.jsonl) && ollamaq batch wait $ID
  generate-requests | ollamaq batch submit --id nightly-2026-01-02 -
  ollamaq batch submit --completion-window 1h --wait requests.jsonl
`

func cmdBatchSubmit(fs *flag.FlagSet) runFunc {
	id := fs.String("id", "", "batch ID to use (letters, digits, '-', '_'); default: from the file's content")
	strict := fs.Bool("strict", false, "refuse the whole file if a line is not a valid request")
	wait := fs.Bool("wait", false, "then follow the batch until it is done, as 'batch wait'")
	asJSON := fs.Bool("json", false, "print the batch record as JSON instead of the ID")
	window := fs.String("completion-window", "", "how long the batch has to finish, such as 24h or 30m (default: the file's completion_window, else 24h)")
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "batch submit: want one FILE (see --help)")
		}
		if *id != "" && !batch.ValidID(*id) {
			return e.fail(exitUsage, "batch submit: --id %q must be 1 to 64 letters, digits, '-' or '_'", *id)
		}
		var completion time.Duration
		if *window != "" {
			d, err := batch.ParseWindow(*window)
			if err != nil {
				return e.fail(exitUsage, "batch submit: --completion-window: %v", err)
			}
			completion = d
		}
		path := args[0]
		src, name, cleanup, err := e.source(path)
		if err != nil {
			return e.fail(exitFailed, "%v", err)
		}
		defer cleanup()

		return e.withBatches(ctx, func(c *batch.Client) int {
			opts, finish := e.submitOptions(name)
			opts.ID, opts.Strict, opts.CompletionWindow = *id, *strict, completion
			sub, err := c.Submit(ctx, src, opts)
			finish()
			switch {
			case errors.Is(err, context.Canceled) && sub != nil:
				return e.fail(exitFailed, "interrupted after queuing %d of %d requests of %s; run the same command again to queue the rest",
					sub.Record.Submitted, sub.Record.Requests, sub.Record.ID)
			case err != nil:
				return e.batchFailed(err)
			}
			rec := sub.Record
			switch {
			case sub.Queued == 0 && !sub.Created:
				fmt.Fprintf(e.stderr, "%s was submitted before: nothing to queue\n", rec.ID)
			case sub.Skipped > 0:
				fmt.Fprintf(e.stderr, "queued the other %d requests of %s (%d were queued before)\n", sub.Queued, rec.ID, sub.Skipped)
			default:
				fmt.Fprintf(e.stderr, "queued %d requests of %s as %s", rec.Requests, name, rec.ID)
				switch rec.Invalid {
				case 0:
				case 1:
					fmt.Fprint(e.stderr, " (1 invalid line skipped)")
				default:
					fmt.Fprintf(e.stderr, " (%d invalid lines skipped)", rec.Invalid)
				}
				fmt.Fprintln(e.stderr)
			}
			e.warnUnserved(ctx, c, rec)
			if *asJSON {
				if code := e.printJSON(rec); code != exitOK {
					return code
				}
			} else {
				fmt.Fprintln(e.stdout, rec.ID)
			}
			if !*wait {
				return exitOK
			}
			st, err := e.follow(ctx, c, rec.ID)
			if err != nil {
				return e.batchFailed(err)
			}
			fmt.Fprintln(e.stderr, summary(st))
			return endCode(st)
		})
	}
}

// submitOptions returns the options that report the bad lines of the batch
// file name and show how far its checking and queuing got, and the func that
// ends the progress display.
func (e *env) submitOptions(name string) (batch.SubmitOptions, func()) {
	var checking, queuing *progress
	reported := 0
	opts := batch.SubmitOptions{Name: name,
		Report: func(le *batch.LineError) {
			if reported++; reported <= 50 {
				fmt.Fprintf(e.stderr, "ollamaq: %s: %v\n", name, le)
			} else if reported == 51 {
				fmt.Fprintf(e.stderr, "ollamaq: %s: more bad lines; 'ollamaq batch status' lists the first ones\n", name)
			}
		},
		Progress: func(p batch.Progress) {
			if p.Checking {
				if checking == nil {
					checking = e.newProgress("checking "+name, -1, 0)
				}
				checking.update(p.Lines, "lines")
				return
			}
			if queuing == nil {
				if checking != nil {
					checking.finish("")
				}
				queuing = e.newProgress("queuing "+p.ID, p.Requests, p.Submitted)
			}
			queuing.update(p.Submitted, "")
		},
	}
	finish := func() {
		if queuing != nil {
			queuing.finish("")
		} else if checking != nil {
			checking.finish("")
		}
	}
	return opts, finish
}

// warnUnserved warns about models no worker has served: their jobs wait
// until a worker that has them starts, or the batch's window ends.
func (e *env) warnUnserved(ctx context.Context, c *batch.Client, rec *batch.Record) {
	for model, n := range rec.Models {
		if ok, err := c.Served(ctx, model); err == nil && !ok {
			fmt.Fprintf(e.stderr, "ollamaq: warning: no worker has served %s yet; its %d requests wait until one does, at most the completion window (%s)\n",
				model, n, rec.CompletionWindow)
		}
	}
}

// source returns the batch file at path; "-" reads stdin into a temporary
// file first, since a batch file is read twice.
func (e *env) source(path string) (batch.Source, string, func(), error) {
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, "", nil, fmt.Errorf("cannot read %s: %v", path, pathError(err))
		}
		_ = f.Close() // Only checking that it opens; Submit opens it itself.
		return func() (io.ReadCloser, error) { return os.Open(path) }, filepath.Base(path), func() {}, nil
	}
	tmp, err := os.CreateTemp("", "ollamaq-batch-*.jsonl")
	if err != nil {
		return nil, "", nil, fmt.Errorf("cannot buffer stdin: %v", err)
	}
	cleanup := func() { _ = os.Remove(tmp.Name()) } // Best effort: a temporary file.
	if _, err := io.Copy(tmp, e.stdin); err != nil {
		cleanup()
		return nil, "", nil, fmt.Errorf("cannot buffer stdin: %v", err)
	}
	if err := tmp.Close(); err != nil {
		cleanup()
		return nil, "", nil, fmt.Errorf("cannot buffer stdin: %v", err)
	}
	return func() (io.ReadCloser, error) { return os.Open(tmp.Name()) }, "stdin", cleanup, nil
}
