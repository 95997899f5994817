package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
)

// rateRow is what one node did for one model between two of its records:
// the counts' differences (fleet.Counts) and, per second, jobs and tokens.
type rateRow struct {
	Node  string `json:"node"`
	Model string `json:"model"`
	// Seconds is the time between the two records (their updated_at, the
	// worker's clock), over which the rates are.
	Seconds         float64 `json:"seconds"`
	JobsPerSecond   float64 `json:"jobs_per_second"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	Jobs            int64   `json:"jobs"`
	Failed          int64   `json:"failed"`
	Tokens          int64   `json:"tokens"`
	Loads           int64   `json:"loads"` // model loads: jobs that found the model unloaded
}

// rater turns the node records top sees, refresh after refresh, into
// rates: each node's counts in its latest record less those in the record
// the last rates were counted to. A worker rewrites its record every
// heartbeat and within half a second of a job's start or end, so the span
// is about the refresh interval, and at least a heartbeat.
type rater struct {
	base map[string]*fleet.Node // by node ID
	last map[string][]rateRow   // the rows of base, for refreshes that see no newer record
}

func newRater() *rater {
	return &rater{base: map[string]*fleet.Node{}, last: map[string][]rateRow{}}
}

// update takes the records of a refresh and returns the rates by node and
// model. A node seen for the first time, or restarted (its counts start
// again), has none until its next record.
func (r *rater) update(nodes []*fleet.Node) []rateRow {
	var out []rateRow
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.ID] = true
		b := r.base[n.ID]
		switch {
		case b == nil || !b.StartedAt.Equal(n.StartedAt):
			r.base[n.ID], r.last[n.ID] = n, nil
			continue
		case !n.UpdatedAt.After(b.UpdatedAt):
			out = append(out, r.last[n.ID]...)
			continue
		}
		rows, ok := rates(b, n)
		if !ok { // A count went down: not the same run of the worker.
			rows = nil
		}
		r.base[n.ID], r.last[n.ID] = n, rows
		out = append(out, rows...)
	}
	for id := range r.base {
		if !seen[id] {
			delete(r.base, id)
			delete(r.last, id)
		}
	}
	slices.SortFunc(out, func(a, b rateRow) int { return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Model, b.Model)) })
	return out
}

// rates are the rows of node n from record b to its later record n; false
// if a count went down.
func rates(b, n *fleet.Node) ([]rateRow, bool) {
	secs := n.UpdatedAt.Sub(b.UpdatedAt).Seconds()
	var rows []rateRow
	for model, c := range n.Served {
		was := b.Served[model]
		d := fleet.Counts{Jobs: c.Jobs - was.Jobs, Failed: c.Failed - was.Failed, Tokens: c.Tokens - was.Tokens, Loads: c.Loads - was.Loads}
		if d.Jobs < 0 || d.Failed < 0 || d.Tokens < 0 || d.Loads < 0 {
			return nil, false
		}
		rows = append(rows, rateRow{Node: n.ID, Model: model, Seconds: secs, JobsPerSecond: float64(d.Jobs) / secs,
			TokensPerSecond: float64(d.Tokens) / secs, Jobs: d.Jobs, Failed: d.Failed, Tokens: d.Tokens, Loads: d.Loads})
	}
	return rows, true
}

// writeRates prints the rates, with a line per model for all nodes when
// more than one served it.
func writeRates(w io.Writer, rows []rateRow) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no rates yet: they need two records of a node, a heartbeat apart")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tMODEL\tJOBS/S\tTOKENS/S\tFAILED\tLOADS\tOVER")
	type total struct {
		r     rateRow
		nodes int
	}
	totals := map[string]*total{}
	var models []string
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%d\t%d\t%s\n", r.Node, r.Model, r.JobsPerSecond, r.TokensPerSecond, r.Failed, r.Loads,
			time.Duration(r.Seconds*float64(time.Second)).Round(100*time.Millisecond))
		t := totals[r.Model]
		if t == nil {
			t = &total{}
			totals[r.Model] = t
			models = append(models, r.Model)
		}
		t.nodes++
		t.r.JobsPerSecond += r.JobsPerSecond
		t.r.TokensPerSecond += r.TokensPerSecond
		t.r.Failed += r.Failed
		t.r.Loads += r.Loads
	}
	slices.Sort(models)
	for _, m := range models {
		if t := totals[m]; t.nodes > 1 {
			fmt.Fprintf(tw, "(all %d)\t%s\t%.1f\t%.1f\t%d\t%d\t\n", t.nodes, m, t.r.JobsPerSecond, t.r.TokensPerSecond, t.r.Failed, t.r.Loads)
		}
	}
	_ = tw.Flush() // Output errors end the command anyway.
}
