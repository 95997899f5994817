package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const usageSynopsis = `Usage: ollamaq usage [--since 24h] [--by tenant|key|model] [--model M] [--json]

Sums the job records of the audit trail (stream OLLAMAQ_AUDIT) since a time,
per tenant, key or model: requests (jobs, whatever their outcome), prompt,
completion and total tokens as Ollama counted them, and the time the jobs
ran and waited in the queue. Most tokens first. A job counts once, however
many records it has.

A job counts for its key and tenant only if a dispatcher signed them (its
MAC, made with the secret in the key bucket, verifies). A job without, such
as a NATS-native client's, or one whose key a requester only claimed, counts
for its requester, the NATS user that queued it: shown as
"(requester NAME)" for a tenant and "(none: requester NAME)" for a key
(--json: "verified": false, "key": "-").

--since is a duration back from now (90m, 24h, 7d), an RFC 3339 time, or
all; it counts from when the stream stored a record.

Examples:
  ollamaq usage
  ollamaq usage --since 30d --by key
  ollamaq usage --by model --model llama3.2
  ollamaq usage --since 2026-01-01T00:00:00Z --json | jq '.[] | select(.tenant == "acme") | .total_tokens'
`

// usageRow is the usage of one tenant, key or model.
type usageRow struct {
	Tenant string `json:"tenant,omitempty"` // --by tenant and key
	Key    string `json:"key,omitempty"`    // --by key: "-" for unverified jobs
	Model  string `json:"model,omitempty"`  // --by model
	// Verified, with --by tenant or key, says whether the row's jobs carry
	// a dispatcher's MAC over their key and tenant; without one, Tenant is
	// the requester's.
	Verified         *bool  `json:"verified,omitempty"`
	Requester        string `json:"requester,omitempty"` // of unverified jobs
	Requests         int    `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	RunMS            int64  `json:"run_ms"`
	QueueMS          int64  `json:"queue_ms"`
}

func cmdUsage(fs *flag.FlagSet) runFunc {
	since := fs.String("since", "24h", "jobs since this long ago (90m, 24h, 7d), this RFC 3339 time, or all")
	by := fs.String("by", "tenant", "sum per tenant, key or model")
	model := fs.String("model", "", "only jobs of this model")
	asJSON := fs.Bool("json", false, "print the sums as JSON")
	return func(ctx context.Context, e *env, _ []string) int {
		query, ok := e.auditQuery(*since, *model)
		if !ok {
			return exitUsage
		}
		query.Kind = job.AuditJob
		switch *by {
		case "tenant", "key", "model":
		default:
			return e.fail(exitUsage, "usage: --by %q: want tenant, key or model", *by)
		}
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			sums := map[usageGroup]*usageRow{}
			seen := map[string]bool{} // requester and job of the jobs counted
			code := e.readAudit(ctx, q, query, func(r audit.Record, verified bool) {
				if r.Job != "" {
					id := r.Requester + "." + r.Job
					if seen[id] {
						return
					}
					seen[id] = true
				}
				g := group(*by, r, verified)
				s := sums[g]
				if s == nil {
					s = g.row(*by)
					sums[g] = s
				}
				s.Requests++
				s.PromptTokens += int64(r.PromptTokens)
				s.CompletionTokens += int64(r.CompletionTokens)
				s.TotalTokens += int64(r.PromptTokens) + int64(r.CompletionTokens)
				s.RunMS += r.RunMS
				s.QueueMS += r.QueueMS
			})
			if code != exitOK {
				return code
			}
			rows := make([]usageRow, 0, len(sums))
			for _, s := range sums {
				rows = append(rows, *s)
			}
			slices.SortFunc(rows, func(a, b usageRow) int {
				return cmp.Or(cmp.Compare(b.TotalTokens, a.TotalTokens), cmp.Compare(b.Requests, a.Requests),
					strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Key, b.Key), strings.Compare(a.Model, b.Model),
					cmp.Compare(a.Requester, b.Requester))
			})
			return printList(e, *asJSON, rows, func(w io.Writer, rows []usageRow, _ time.Time) {
				if writeUsage(w, *by, rows) {
					fmt.Fprintln(e.stderr, "(requester NAME): jobs without a dispatcher-verified API key, counted for the NATS user that queued them")
				}
			}, "no jobs in the audit trail since "+sinceText(query.Since))
		})
	}
}

// usageGroup is what the jobs of one row share.
type usageGroup struct {
	tenant, key, model, requester string
	verified                      bool
}

// group is the row record r counts in: per model; or per tenant, or key,
// as signed by a dispatcher if verified, else the requester's.
func group(by string, r audit.Record, verified bool) usageGroup {
	switch {
	case by == "model":
		return usageGroup{model: dash(r.Model)}
	case !verified:
		return usageGroup{tenant: r.Requester, key: "-", requester: r.Requester}
	case by == "key":
		return usageGroup{tenant: r.Tenant, key: r.Key, verified: true}
	}
	return usageGroup{tenant: r.Tenant, verified: true}
}

// row is the empty row of the jobs of g.
func (g usageGroup) row(by string) *usageRow {
	r := &usageRow{Tenant: g.tenant, Model: g.model, Requester: g.requester}
	if by == "key" {
		r.Key = g.key
	}
	if by != "model" {
		r.Verified = &g.verified
	}
	return r
}

// writeUsage writes the sums as a table and reports whether a row is of
// unverified jobs.
func writeUsage(w io.Writer, by string, rows []usageRow) bool {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := map[string]string{"tenant": "TENANT", "key": "KEY\tTENANT", "model": "MODEL"}[by]
	fmt.Fprintln(tw, head+"\tREQUESTS\tPROMPT TOKENS\tCOMPLETION TOKENS\tTOTAL TOKENS\tRUN TIME\tQUEUE TIME")
	unverified := false
	for _, r := range rows {
		var name string
		switch {
		case by == "model":
			name = r.Model
		case !*r.Verified:
			unverified = true
			name = "(requester " + r.Requester + ")"
			if by == "key" {
				name = "(none: requester " + r.Requester + ")\t" + name
			}
		case by == "key":
			name = r.Key + "\t" + dash(r.Tenant)
		default:
			name = dash(r.Tenant)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", name, r.Requests, r.PromptTokens, r.CompletionTokens, r.TotalTokens,
			millis(r.RunMS), millis(r.QueueMS))
	}
	_ = tw.Flush() // Output errors end the command anyway.
	return unverified
}

// sinceText says when --since began.
func sinceText(t time.Time) string {
	if t.IsZero() {
		return "it began"
	}
	return t.UTC().Format(time.RFC3339)
}
