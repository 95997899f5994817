package dispatcher

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The dispatcher writes two kinds of audit records (pkg/audit): one per
// management action (pull, delete, copy), and one per job it withdrew from
// the queue before any worker took it. Workers write every other job's.

// audit stores rec, logging a failure: the action or job it records has
// happened either way.
func (s *Server) audit(ctx context.Context, rec audit.Record) {
	if err := audit.Publish(ctx, s.q.JetStream(), rec); err != nil {
		s.log.Warn("audit record not stored", "kind", rec.Kind, "job", rec.Job, "action", rec.Action, "err", err)
	}
}

// jobRecord is the audit record of a job this dispatcher ends itself.
func (s *Server) jobRecord(qj *queuedJob, outcome, why string) audit.Record {
	now := time.Now()
	return audit.Record{Time: now.UTC(), Kind: job.AuditJob, Job: qj.ID, Requester: s.req.ID(),
		Key: qj.Key, Tenant: qj.Tenant, MAC: qj.MAC, Route: qj.Route, Model: qj.Model, Class: string(qj.Class),
		Outcome: outcome, Error: why, Queued: qj.arrived.UTC(), QueueMS: now.Sub(qj.arrived).Milliseconds()}
}

// audited wraps a management route so that each request leaves one audit
// record of action: who (key, tenant), which model, the status answered.
func (s *Server) audited(action string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.live().MaxBody))
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		sw := &statusWriter{ResponseWriter: w}
		next(sw, r)
		var names struct{ Model, Name, Source, Destination string }
		_ = json.Unmarshal(body, &names) // A body that is not JSON names no model; the handler said so.
		rec := audit.Record{Time: time.Now().UTC(), Kind: job.AuditAdmin, Job: w.Header().Get("X-Request-Id"), Requester: s.req.ID(),
			Action: action, Route: r.URL.Path, Status: sw.statusOr200(), RunMS: time.Since(start).Milliseconds(), Outcome: audit.Done}
		if c, err := job.CanonicalModel(cmp.Or(names.Model, names.Name, names.Source)); err == nil {
			rec.Model = c
		}
		if names.Destination != "" {
			rec.Error = "destination " + names.Destination // What a copy made; there is no other field for it.
		}
		if rec.Status >= 400 {
			rec.Outcome = audit.Failed
		}
		if k, ok := requestKey(r); ok {
			rec.Key, rec.Tenant = k.ID, k.Tenant
			rec.MAC = audit.Sign(s.opts.MACSecret, rec.Job, rec.Requester, k.ID, k.Tenant)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		s.audit(ctx, rec)
	}
}

// errReader returns err after the bytes before it, so a handler reading a
// restored body sees the error the first read met (a body too large).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}
