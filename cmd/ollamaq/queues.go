package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const queuesSynopsis = `Usage: ollamaq queues [--json]

Lists the job queues, one per model and class (interactive, batch): jobs
waiting for a worker (PENDING), jobs a worker is running (RUNNING), how
long the oldest waiting job has waited, and how many live workers have the
model. Read from JetStream: the model's consumer and the job stream. A
queue without a consumer holds jobs for a model no worker has served yet.

Examples:
  ollamaq queues
  ollamaq queues --json | jq '[.[] | .pending] | add'
`

// queueRow is one queue: the jobs of one model and class.
type queueRow struct {
	Model   string    `json:"model"`
	Class   job.Class `json:"class"`
	Pending uint64    `json:"pending"` // waiting for a worker
	Running int       `json:"running"` // taken by a worker, not finished
	// OldestWaiting is when the oldest waiting job was queued.
	OldestWaiting *time.Time `json:"oldest_waiting,omitempty"`
	// Consumer is the durable consumer the workers pull from; empty when no
	// worker has served the model yet.
	Consumer string `json:"consumer,omitempty"`
	Workers  int    `json:"workers"` // live workers that have the model
}

func cmdQueues(fs *flag.FlagSet) runFunc {
	return readList(fs, "the queues", func(ctx context.Context, e *env, q *queue.Queue) ([]queueRow, error) {
		nodes, err := readNodes(ctx, q, e.conn.timeout)
		if err != nil {
			return nil, err
		}
		return readQueues(ctx, q, nodes)
	}, writeQueues, "no queues yet: no job was queued and no worker has started")
}

// readQueues reads every queue from the consumers of the job stream and the
// subjects it holds jobs on.
func readQueues(ctx context.Context, q *queue.Queue, nodes []*fleet.Node) ([]queueRow, error) {
	s, err := q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", job.Stream, err)
	}
	type key struct {
		model string
		class job.Class
	}
	byKey := map[key]*queueRow{}
	var rows []*queueRow
	row := func(subject string) *queueRow {
		model, class, _, err := job.ParseJobSubject(subject)
		if err != nil {
			return nil // Not a queue of ours.
		}
		k := key{model, class}
		if r := byKey[k]; r != nil {
			return r
		}
		r := &queueRow{Model: model, Class: class}
		for _, n := range nodes {
			if n.HasModel(model) {
				r.Workers++
			}
		}
		byKey[k] = r
		rows = append(rows, r)
		return r
	}
	// oldest finds the first job on subject at or after seq.
	oldest := func(subject string, seq uint64) (*time.Time, error) {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the oldest job on %s: %w", subject, err)
		}
		t := m.Time.UTC()
		return &t, nil
	}
	consumers := s.ListConsumers(ctx)
	for info := range consumers.Info() {
		r := row(info.Config.FilterSubject)
		if r == nil {
			continue
		}
		r.Consumer, r.Pending, r.Running = info.Name, info.NumPending, info.NumAckPending
		if info.NumPending > 0 {
			// The jobs after the last one delivered have waited longest.
			if r.OldestWaiting, err = oldest(info.Config.FilterSubject, info.Delivered.Stream+1); err != nil {
				return nil, err
			}
		}
	}
	if err := consumers.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", job.Stream, err)
	}
	// Jobs for a model no worker has served have no consumer.
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(job.JobsPrefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", job.Stream, err)
	}
	for subject, n := range info.State.Subjects {
		r := row(subject)
		if r == nil || r.Consumer != "" {
			continue
		}
		r.Pending += n // One subject per requester.
		t, err := oldest(subject, 1)
		if err != nil {
			return nil, err
		}
		if t != nil && (r.OldestWaiting == nil || t.Before(*r.OldestWaiting)) {
			r.OldestWaiting = t
		}
	}
	out := make([]queueRow, len(rows))
	for i, r := range rows {
		out[i] = *r
	}
	slices.SortFunc(out, func(a, b queueRow) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(classOrder(a.Class), classOrder(b.Class)))
	})
	return out, nil
}

func classOrder(c job.Class) int { return slices.Index(job.Classes, c) }

func writeQueues(w io.Writer, rows []queueRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tCLASS\tPENDING\tRUNNING\tOLDEST WAITING\tWORKERS")
	for _, r := range rows {
		waited := "-"
		if r.OldestWaiting != nil {
			waited = age(now.Sub(*r.OldestWaiting))
		}
		workers := fmt.Sprint(r.Workers)
		if r.Consumer == "" {
			workers += " (never served)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Model, r.Class, r.Pending, r.Running, waited, workers)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}
