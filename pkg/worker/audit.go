package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Audit records (pkg/audit): one per queued job a worker ends for good,
// written by that worker (settle.go), by the reaper for a job no worker
// settled (reap.go), or by the worker that answers a job of a model nobody
// serves (unserved.go). Node commands are not jobs and get none. A record
// says who, what and how it ended, never the prompt or the answer; a failed
// write is logged and counted, and the job is settled all the same.

// auditTimeout bounds the write of one record. A job's record comes before
// the job is settled, so for a job it is also at most a third of the ack
// wait: the job must not be redelivered while its worker waits.
const auditTimeout = 5 * time.Second

// maxAuditField bounds each header value a record copies: headers are the
// requester's to write, and records are kept for months.
const maxAuditField = 1024

// jobRecord is the record of the job queued on subject with headers h, with
// what they tell: its requester (the subject's), model and class when the
// subject parses, and the key, tenant and MAC as the job claims them
// (copied, never checked here: readers verify the MAC, audit.Record.Verified).
func jobRecord(subject string, h nats.Header) audit.Record {
	r := audit.Record{Kind: job.AuditJob, Job: h.Get(job.HeaderJob), Route: clip(h.Get(job.HeaderRoute)),
		Key: clip(h.Get(job.HeaderKey)), Tenant: clip(h.Get(job.HeaderTenant)), MAC: clip(h.Get(job.HeaderKeyMAC)),
		Batch: clip(h.Get(job.HeaderBatch))}
	if r.Job == "" {
		r.Job = h.Get(job.HeaderMsgID)
	}
	r.Job = clip(r.Job)
	// Empty for a subject that names no requester; the record's subject
	// then has "-" in its place (job.AuditSubject).
	r.Requester, _ = job.SubjectRequester(subject)
	if model, class, _, err := job.ParseJobSubject(subject); err == nil {
		r.Model, r.Class = model, string(class)
	}
	return r
}

// clip bounds a copied header value to maxAuditField bytes.
func clip(s string) string {
	if len(s) > maxAuditField {
		return s[:maxAuditField]
	}
	return s
}

// audit sends the record of the job t, which ends here for good with r,
// and returns the wait for it, which settle calls after it settled the
// job: the record is on the wire first, and the two round trips overlap.
// It sends nothing for a node command or a result that is not final.
func (t *task) audit(ctx context.Context, r result) (wait func()) {
	outcome := r.outcome()
	if t.msg == nil || outcome == "" {
		return func() {}
	}
	rec := jobRecord(t.msg.Subject(), t.msg.Headers())
	rec.Worker, rec.Outcome, rec.Attempts = t.w.cfg.ID, outcome, t.attempt
	if outcome != audit.Done {
		rec.Status, rec.Error = r.status, clip(r.msg)
		if outcome == audit.Canceled {
			rec.Status, rec.Error = 499, "" // What the requester was told.
		}
	}
	if r.usage != nil {
		rec.PromptTokens, rec.CompletionTokens = r.usage.PromptTokens, r.usage.CompletionTokens
	}
	if md, err := t.msg.Metadata(); err == nil {
		rec.Queued = md.Timestamp.UTC()
		// The stream's clock and this worker's may differ a little.
		rec.QueueMS = max(t.taken.Sub(md.Timestamp).Milliseconds(), 0)
	}
	rec.RunMS = time.Since(t.taken).Milliseconds()
	return t.w.sendAudit(ctx, rec, min(auditTimeout, t.w.q.AckWait()/3))
}

// writeAudit publishes rec within timeout, even after ctx is done (a
// stopping worker still settles its jobs). A failure is logged and counted.
func (w *Worker) writeAudit(ctx context.Context, rec audit.Record, timeout time.Duration) {
	w.sendAudit(ctx, rec, timeout)()
}

// sendAudit sends rec and returns the wait for it, bounded by timeout from
// now, even after ctx is done. A failure is logged and counted.
func (w *Worker) sendAudit(ctx context.Context, rec audit.Record, timeout time.Duration) (wait func()) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	failed := func(err error) {
		w.metrics.auditFailures.Inc()
		w.log.Warn("write audit record", "job", rec.Job, "outcome", rec.Outcome, "err", err)
	}
	done, err := audit.Send(w.q.JetStream(), rec)
	if err != nil {
		cancel()
		failed(err)
		return func() {}
	}
	return func() {
		defer cancel()
		if err := done(ctx); err != nil {
			failed(err)
		}
	}
}
