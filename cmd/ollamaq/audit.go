package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const auditSynopsis = `Usage: ollamaq audit [flags]

Lists the audit trail (stream OLLAMAQ_AUDIT), oldest first: one record per
job, written by whoever ended it, and one per management action (keys
create, revoke, rotate; model pull, delete, copy). Each line: time, kind,
outcome, HTTP status, requester (the NATS user that queued the job or took
the action), tenant, key, route or action, model, worker, tokens
prompt/completion, time queued and run. Never a prompt or an answer.

A record's key and tenant, those of the HTTP request behind a job or a
dispatcher's management action, count only with a dispatcher's MAC over
them: those without one, which any process that may write the trail can
claim, are marked ? and do not count in 'ollamaq usage'. The records of
'ollamaq keys' name the key they acted on, with no MAC, unmarked.

--since is a duration back from now (90m, 24h, 7d), an RFC 3339 time, or
all; it counts from when the stream stored a record. --kind and --model are
filtered by the server, --key and --tenant here; --tenant T also matches
jobs without a tenant whose requester is T. --limit keeps the newest N.
--json prints one record per line (JSON lines) as stored, with "verified":
whether its key and tenant carry a dispatcher's MAC.

Examples:
  ollamaq audit
  ollamaq audit --since 7d --kind admin
  ollamaq audit --tenant acme --model llama3.2 --limit 20
  ollamaq audit --since 24h --json | jq -c 'select(.outcome != "done")'
`

// auditRow is an audit record as --json prints it.
type auditRow struct {
	audit.Record
	// Verified is whether Key and Tenant carry a dispatcher's MAC.
	Verified bool `json:"verified"`
}

func cmdAudit(fs *flag.FlagSet) runFunc {
	since := fs.String("since", "1h", "records since this long ago (90m, 24h, 7d), this RFC 3339 time, or all")
	key := fs.String("key", "", "only records of this key `ID`")
	model := fs.String("model", "", "only records of this model")
	tenant := fs.String("tenant", "", "only records of this tenant")
	kind := fs.String("kind", "", "only records of this kind: job or admin (default both)")
	limit := fs.Int("limit", 100, "print the newest N (0: all)")
	asJSON := fs.Bool("json", false, "print the records as JSON lines, with \"verified\"")
	return func(ctx context.Context, e *env, _ []string) int {
		query, ok := e.auditQuery(*since, *model)
		if !ok {
			return exitUsage
		}
		switch *kind {
		case "", job.AuditJob, job.AuditAdmin:
			query.Kind = *kind
		default:
			return e.fail(exitUsage, "audit: --kind %q: want job or admin", *kind)
		}
		if *limit < 0 {
			return e.fail(exitUsage, "audit: --limit must not be negative")
		}
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			var rows []auditRow
			matched := 0
			code := e.readAudit(ctx, q, query, func(r audit.Record, verified bool) {
				if *key != "" && r.Key != *key || *tenant != "" && r.Tenant != *tenant && (r.Tenant != "" || r.Requester != *tenant) {
					return
				}
				matched++
				rows = append(rows, auditRow{Record: r, Verified: verified})
				if *limit > 0 && len(rows) > *limit {
					rows = rows[1:]
				}
			})
			if code != exitOK {
				return code
			}
			if *asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetEscapeHTML(false)
				for _, r := range rows {
					if err := enc.Encode(r); err != nil {
						return e.fail(exitFailed, "write output: %v", err)
					}
				}
			} else if writeAudit(e.stdout, rows) {
				fmt.Fprintln(e.stderr, "?: a key and tenant without a dispatcher's valid MAC: claimed, not verified (docs/security.md)")
			}
			switch {
			case matched == 0:
				fmt.Fprintln(e.stderr, "no audit records")
			case matched > len(rows):
				fmt.Fprintf(e.stderr, "the newest %d of %d records (--limit 0 prints all)\n", len(rows), matched)
			}
			return exitOK
		})
	}
}

// writeAudit writes the records as a table and reports whether it marked
// an unverified claim.
func writeAudit(w io.Writer, rows []auditRow) bool {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tOUTCOME\tSTATUS\tREQUESTER\tTENANT\tKEY\tROUTE/ACTION\tMODEL\tWORKER\tTOKENS P/C\tQUEUED\tRUN")
	marked := false
	for _, r := range rows {
		tenant, key := dash(r.Tenant), dash(r.Key)
		if claimed(r) {
			tenant, key, marked = tenant+"?", key+"?", true
		}
		status := "-"
		if r.Status != 0 {
			status = strconv.Itoa(r.Status)
		}
		what, tokens, queued, ran := r.Route, fmt.Sprintf("%d/%d", r.PromptTokens, r.CompletionTokens), millis(r.QueueMS), millis(r.RunMS)
		if r.Kind != job.AuditJob {
			what, tokens, queued, ran = r.Action, "-", "-", "-"
			if r.RunMS != 0 { // how long a dispatcher's management request took
				ran = millis(r.RunMS)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), r.Kind, dash(r.Outcome), status,
			dash(r.Requester), tenant, key, dash(what), dash(r.Model), dash(r.Worker), tokens, queued, ran)
	}
	_ = tw.Flush() // Output errors end the command anyway.
	return marked
}

// claimed reports whether r states a key and tenant that its MAC does not
// verify. The records of ollamaq keys name the key they acted on, not one
// that made a request: they have no MAC to verify.
func claimed(r auditRow) bool {
	return r.Key != "" && !r.Verified && !(r.Kind == job.AuditAdmin && strings.HasPrefix(r.Action, "keys."))
}

// dash is s, or "-" for nothing.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// millis formats a number of milliseconds as a duration: to the
// millisecond under a minute, else to the second.
func millis(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d >= time.Minute {
		d = d.Round(time.Second)
	}
	return d.String()
}

// auditQuery parses --since and --model into a query; on failure it has
// said why.
func (e *env) auditQuery(since, model string) (audit.Query, bool) {
	var q audit.Query
	t, err := parseSince(since, e.now())
	if err != nil {
		e.fail(exitUsage, "--since %q: %v", since, err)
		return q, false
	}
	q.Since = t
	if model != "" {
		m, err := job.CanonicalModel(model)
		if err != nil {
			e.fail(exitUsage, "--model %q is not an Ollama model name", model)
			return q, false
		}
		q.Model = m
	}
	return q, true
}

// parseSince parses --since: an RFC 3339 time, a duration back from now
// (90m, 24h, 7d), or all (the zero time).
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "all" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseExpiry(s)
	if err != nil {
		return time.Time{}, errors.New("want a duration such as 90m, 24h or 7d, an RFC 3339 time, or all")
	}
	return now.Add(-d), nil
}

// readAudit reads the records query selects, telling fn whether each
// record's key and tenant carry a dispatcher's MAC, and returns the exit
// code.
func (e *env) readAudit(ctx context.Context, q *queue.Queue, query audit.Query, fn func(r audit.Record, verified bool)) int {
	secret, err := e.macSecret(ctx, q)
	if err != nil {
		return e.connectFailed(err)
	}
	skipped, err := audit.Read(ctx, q.JetStream(), query, func(r audit.Record) error {
		// Without a secret nothing is verified: an empty key would verify
		// a MAC anyone can make.
		fn(r, secret != nil && r.Verified(secret))
		return nil
	})
	switch {
	case errors.Is(err, audit.ErrNoStream):
		return e.fail(exitConnect, "no audit stream on this NATS server: start a dispatcher (it creates it) first")
	case errors.Is(err, context.Canceled):
		return e.fail(exitFailed, "interrupted")
	case err != nil:
		return e.connectFailed(bindError(q, err, ""))
	}
	if skipped > 0 {
		fmt.Fprintf(e.stderr, "ollamaq: skipped %d messages in %s that are not audit records\n", skipped, job.AuditStream)
	}
	return exitOK
}

// macSecret reads the dispatchers' MAC secret from the key bucket; nil when
// there is none yet (no dispatcher has signed anything), or no bucket.
func (e *env) macSecret(ctx context.Context, q *queue.Queue) ([]byte, error) {
	bctx, cancel := context.WithTimeout(ctx, e.conn.timeout)
	defer cancel()
	kv, err := q.Keys(bctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, bindError(q, err, "")
	}
	entry, err := kv.Get(bctx, job.KeyMACEntry)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, bindError(q, err, "")
	}
	if len(entry.Value()) < 32 {
		return nil, connFailed("the MAC secret in %s is too short (%d bytes): nothing can be verified with it", job.KeyBucket, len(entry.Value()))
	}
	return entry.Value(), nil
}
