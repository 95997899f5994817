package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// dlqUsage and dlqMore are the help of 'ollamaq dlq', before and after the
// list of its commands.
const (
	dlqUsage = `The dead letters (stream OLLAMAQ_DLQ): jobs given up on, with why. A job lands
there when it was malformed, when Ollama failed it on every delivery, or when
every worker that took it died. requeue puts a dead letter back on its
model's queue as it was, and removes it from the dead letters.
`
	dlqMore = `Examples:
  ollamaq dlq list
  ollamaq dlq show 12
  ollamaq dlq requeue 12 13
  ollamaq dlq list --json | jq -r '.[].seq' | xargs ollamaq dlq requeue
`
)

// dlqTimeout bounds each dlq command once connected.
const dlqTimeout = 30 * time.Second

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
	if model, class, _, err := job.ParseJobSubject(d.Subject); err == nil {
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

// seqs parses dead letters' sequence numbers; on failure it has printed why
// and returns the exit code.
func (e *env) seqs(args []string) ([]uint64, int, bool) {
	var seqs []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, e.fail(exitUsage, "%q is not a dead letter's sequence number (see ollamaq dlq list)", a), false
		}
		seqs = append(seqs, n)
	}
	return seqs, exitOK, true
}

func writeDeadLetters(w io.Writer, rows []deadLetterRow, _ time.Time) {
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
