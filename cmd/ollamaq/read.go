package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ollamamax/ollamamax/pkg/queue"
)

// readList is a read command that lists rows from the queue: it defines
// --json (printing what as JSON), connects, reads the rows, and prints them
// with write or as JSON. When there are none it says none on stderr. A read
// error is exitConnect: the queue is there but does not answer.
func readList[T any](fs *flag.FlagSet, what string, read func(ctx context.Context, e *env, q *queue.Queue) ([]T, error),
	write func(w io.Writer, rows []T, now time.Time), none string) runFunc {
	asJSON := fs.Bool("json", false, "print "+what+" as JSON")
	return func(ctx context.Context, e *env, _ []string) int {
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			rows, err := read(ctx, e, q)
			if err != nil {
				return e.fail(exitConnect, "%v", err)
			}
			return printList(e, *asJSON, rows, write, none)
		})
	}
}

// printList prints the rows of a read command: as JSON with asJSON (no rows
// as [], not null), else as write lays them out, then none on stderr if there
// are no rows.
func printList[T any](e *env, asJSON bool, rows []T, write func(io.Writer, []T, time.Time), none string) int {
	if asJSON {
		if rows == nil {
			rows = []T{}
		}
		return e.printJSON(rows)
	}
	write(e.stdout, rows, e.now())
	if len(rows) == 0 {
		fmt.Fprintln(e.stderr, none)
	}
	return exitOK
}

// printJSON prints v as indented JSON on stdout.
func (e *env) printJSON(v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return e.fail(exitFailed, "write output: %v", err)
	}
	return exitOK
}
