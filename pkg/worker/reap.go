package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// maxDeliveries is JetStream's advisory for a job that ran out of deliveries
// without being settled: every worker that took it died or hung.
type maxDeliveries struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// reap moves jobs that ran out of deliveries to the dead letters and tells
// their requesters, until ctx is done. Such a job stays in the work queue,
// never to be delivered again, unless someone does this.
func (w *Worker) reap(ctx context.Context) {
	cons, err := w.q.Reaper(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("dead-letter reaper not running", "err", err)
		}
		return
	}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		batch, err := cons.Fetch(10, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				w.log.Debug("fetch advisories", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for m := range batch.Messages() {
			if err := w.reapOne(ctx, m.Data()); err != nil {
				w.log.Warn("reap job", "err", err)
				if nerr := m.NakWithDelay(5 * time.Second); nerr != nil {
					w.log.Warn("settle advisory", "err", nerr)
				}
				continue
			}
			if err := m.Ack(); err != nil {
				w.log.Warn("settle advisory", "err", err)
			}
		}
		cancel()
	}
}

func (w *Worker) reapOne(ctx context.Context, advisory []byte) error {
	var a maxDeliveries
	if err := json.Unmarshal(advisory, &a); err != nil {
		return nil // Not an advisory we can act on; drop it.
	}
	stream, err := w.q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		return err
	}
	m, err := stream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // Already gone: settled late, expired, or reaped by another worker.
	}
	if err != nil {
		return fmt.Errorf("get job %d: %w", a.StreamSeq, err)
	}
	reason := fmt.Sprintf("not settled after %d deliveries: the workers that took it died or hung", a.Deliveries)
	if err := w.q.Bury(ctx, m.Subject, a.StreamSeq, m.Header, m.Data, reason, a.Deliveries, ""); err != nil {
		return err
	}
	id, reply := m.Header.Get(job.HeaderJob), m.Header.Get(job.HeaderReply)
	rec := jobRecord(m.Subject, m.Header)
	rec.Outcome, rec.Error, rec.Attempts, rec.Queued = audit.DeadLettered, reason, a.Deliveries, m.Time.UTC()
	// Worker stays empty: the advisory does not say who had it last. No
	// attempt ended it, so it has no queue or run time.
	if job.ValidReply(reply) {
		rep := job.Reply{Kind: job.KindError, Job: id, Attempt: a.Deliveries, Seq: job.SeqFinal,
			Status: http.StatusBadGateway, Error: reason, Data: job.ErrorBody(reason)}
		if err := w.nc.PublishMsg(queue.ReplyMsg(reply, rep)); err != nil {
			w.log.Warn("tell requester of dead letter", "job", id, "err", err)
		}
		rec.Status = http.StatusBadGateway
	}
	// Before the job leaves the queue: if the delete below fails, the
	// advisory comes back, and the record's de-duplication keeps one.
	w.writeAudit(ctx, rec, auditTimeout)
	if err := stream.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove reaped job %s: %w", id, err)
	}
	if model, class, _, err := job.ParseJobSubject(m.Subject); err == nil {
		w.metrics.deadLettered.WithLabelValues(model, string(class)).Inc()
	}
	w.log.Info("job moved to dead letters", "job", id, "reason", reason)
	return nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
