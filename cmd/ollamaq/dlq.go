package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const dlqSynopsis = `Usage: ollamaq dlq list [--json] [--limit N]
       ollamaq dlq show [--json] SEQ
       ollamaq dlq requeue SEQ...

The dead letters (stream OLLAMAQ_DLQ): jobs given up on, with why. A job lands
there when it was malformed, when Ollama failed it on every delivery, or when
every worker that took it died. requeue puts a dead letter back on its
model's queue as it was, and removes it from the dead letters.

Examples:
  ollamaq dlq list
  ollamaq dlq show 12
  ollamaq dlq requeue 12 13
  ollamaq dlq list --json | jq -r '.[].seq' | xargs ollamaq dlq requeue

Flags:
`

// deadLetterRow is how a dead letter is printed.
type deadLetterRow struct {
	Seq      uint64            `json:"seq"`
	Job      string            `json:"job"`
	Subject  string            `json:"subject"`
	Model    string            `json:"model,omitempty"`
	Class    job.Class         `json:"class,omitempty"`
	Route    string            `json:"route,omitempty"`
	Attempts int               `json:"attempts"`
	Worker   string            `json:"worker,omitempty"`
	Reason   string            `json:"reason"`
	Headers  map[string]string `json:"headers,omitempty"` // show only
	Body     string            `json:"body,omitempty"`    // show only
}

func toRow(d queue.DeadLetter, full bool) deadLetterRow {
	r := deadLetterRow{Seq: d.Seq, Job: d.JobID(), Subject: d.Subject, Route: d.Header.Get(job.HeaderRoute),
		Attempts: d.Attempts, Worker: d.Worker, Reason: d.Reason}
	if model, class, err := job.ParseJobSubject(d.Subject); err == nil {
		r.Model, r.Class = model, class
	}
	if full {
		r.Headers = map[string]string{}
		for k := range d.Header {
			r.Headers[k] = d.Header.Get(k)
		}
		r.Body = string(d.Body)
	}
	return r
}

func cmdDLQ(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, dlqSynopsis)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print as JSON")
	limit := fs.Int("limit", 100, "list at most this many (0: all)")
	if code, ok := parse(fs, rest, e, dlqSynopsis); !ok {
		return code
	}
	var seqs []uint64
	for _, a := range fs.Args() {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return e.fail(exitUsage, "%q is not a dead letter's sequence number (see ollamaq dlq list)", a)
		}
		seqs = append(seqs, n)
	}
	switch {
	case sub == "list" && len(seqs) == 0:
	case sub == "show" && len(seqs) == 1:
	case sub == "requeue" && len(seqs) > 0:
	default:
		return e.fail(exitUsage, "usage: ollamaq dlq list | show SEQ | requeue SEQ... (see ollamaq dlq --help)")
	}
	nc, q, err := e.connect(ctx)
	if err != nil {
		return e.connectFailed(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch sub {
	case "list":
		dead, err := q.DeadLetters(ctx, *limit)
		if err != nil {
			return e.fail(exitConnect, "read dead letters: %v", err)
		}
		rows := make([]deadLetterRow, len(dead))
		for i, d := range dead {
			rows[i] = toRow(d, false)
		}
		if *asJSON {
			return e.printJSON(rows)
		}
		writeDeadLetters(e.stdout, rows)
		if len(rows) == 0 {
			fmt.Fprintln(e.stderr, "no dead letters")
		}
		return exitOK
	case "show":
		d, err := q.DeadLetterAt(ctx, seqs[0])
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return e.fail(exitFailed, "no dead letter %d", seqs[0])
		}
		if err != nil {
			return e.fail(exitConnect, "read dead letter %d: %v", seqs[0], err)
		}
		row := toRow(d, true)
		if *asJSON {
			return e.printJSON(row)
		}
		fmt.Fprintf(e.stdout, "seq:      %d\njob:      %s\nsubject:  %s\nroute:    %s\nattempts: %d\nworker:   %s\nreason:   %s\nbody:     %s\n",
			row.Seq, row.Job, row.Subject, row.Route, row.Attempts, row.Worker, row.Reason, row.Body)
		return exitOK
	}
	code := exitOK
	for _, seq := range seqs {
		if err := q.Requeue(ctx, seq); err != nil {
			code = e.fail(exitFailed, "requeue %d: %v", seq, err)
			continue
		}
		fmt.Fprintf(e.stdout, "requeued %d\n", seq)
	}
	return code
}

func writeDeadLetters(w io.Writer, rows []deadLetterRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tJOB\tMODEL\tCLASS\tROUTE\tATTEMPTS\tWORKER\tREASON")
	for _, r := range rows {
		worker := r.Worker
		if worker == "" {
			worker = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Seq, r.Job, r.Model, r.Class, r.Route, r.Attempts, worker, r.Reason)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}
