package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Jobs for models no worker has served.
//
// Over HTTP the dispatcher answers 404 "model 'x' not found" when no live
// worker has the model and no worker has ever served it (the model has no
// durable consumer), and queues nothing. A NATS-native client publishes
// straight into the stream, where no consumer's filter would ever match such
// a job. So every worker looks, each Config.UnservedScan, for interactive and
// async jobs on subjects that have no consumer, answers them as the dispatcher would and
// deletes them. Batch jobs are left to wait for a worker within their
// batch's completion window (docs/batch.md).
//
// A worker records a model in its node record only after it created the
// model's consumers, so "no consumer" also means "no live worker has it". A
// model once served keeps its consumers: its jobs wait for a worker, as over
// HTTP.

const (
	// unservedPerScan bounds the jobs one scan answers; a burst takes several.
	unservedPerScan = 256
	// servedCacheSize bounds the models a worker remembers having a consumer.
	servedCacheSize = 4096
)

// scanUnserved answers the jobs of unserved models every UnservedScan until
// ctx is done. Several workers may scan at once: only the one whose delete
// of a job succeeds answers it.
func (w *Worker) scanUnserved(ctx context.Context) {
	t := time.NewTicker(w.cfg.UnservedScan)
	defer t.Stop()
	var stream jetstream.Stream
	// Models known to have a consumer: consumers are durable, so once seen
	// they need no second look. Owned by this goroutine.
	served := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if stream == nil {
			s, err := w.q.JetStream().Stream(ctx, job.Stream)
			if err != nil {
				w.log.Debug("look for jobs of unserved models", "err", err)
				continue
			}
			stream = s
		}
		if err := w.answerUnserved(ctx, stream, served); err != nil && ctx.Err() == nil {
			w.log.Debug("look for jobs of unserved models", "err", err)
		}
	}
}

// answerUnserved makes one scan: it lists the subjects that hold interactive
// and async jobs and answers the jobs of those no consumer takes from.
func (w *Worker) answerUnserved(ctx context.Context, s jetstream.Stream, served map[string]bool) error {
	left := unservedPerScan
	for _, lane := range []job.Class{job.Interactive, job.Async} {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(job.JobsPrefix+".*."+string(lane)+".*"))
		if err != nil {
			return fmt.Errorf("list queued subjects: %w", err)
		}
		if left, err = w.answerSubjects(ctx, s, info.State.Subjects, served, left); err != nil || left == 0 {
			return err
		}
	}
	return nil
}

// answerSubjects answers up to left jobs queued on those of subjects no
// consumer takes from, and returns how many more it may answer.
func (w *Worker) answerSubjects(ctx context.Context, s jetstream.Stream, subjects map[string]uint64, served map[string]bool, left int) (int, error) {
	for subject := range subjects {
		if left == 0 {
			return 0, nil
		}
		model, _, _, err := job.ParseJobSubject(subject)
		if err == nil {
			if served[model] || w.serves(model) {
				continue
			}
			ok, err := w.q.HasConsumer(ctx, model)
			if err != nil {
				return left, err // Unsure: answer nothing.
			}
			if ok {
				if len(served) >= servedCacheSize {
					clear(served)
				}
				served[model] = true
				continue
			}
		}
		// No consumer, or a subject no consumer could ever have (its model
		// token is not a canonical name).
		n, err := w.answerSubject(ctx, s, subject, model, left)
		left -= n
		if err != nil {
			return left, err
		}
	}
	return left, nil
}

// serves reports whether this worker has consumers for the canonical model.
func (w *Worker) serves(model string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.served[consumerKey{model, job.Interactive}]
	return ok
}

// answerSubject removes and answers up to limit jobs queued on subject.
// model is its canonical model, or "" for a subject that names none. It
// returns how many jobs it removed.
func (w *Worker) answerSubject(ctx context.Context, s jetstream.Stream, subject, model string, limit int) (int, error) {
	n := 0
	for seq := uint64(1); n < limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("get job on %s: %w", subject, err)
		}
		seq = m.Sequence + 1
		// Deleting first makes the answer once-only: of several workers, the
		// one whose delete succeeds answers.
		err = s.DeleteMsg(ctx, m.Sequence)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("remove job %d: %w", m.Sequence, err)
		}
		n++
		w.answerJob(ctx, m, model)
	}
	return n, nil
}

// answerJob tells the requester of a removed job that its model is not found,
// as the dispatcher says it over HTTP: error 404 "model 'x' not found" with
// the name as the request gave it. A job on a subject that names no model is
// malformed: 400, and a dead letter. So is one without a reply subject of
// the requester that published it, which nobody may be told about.
func (w *Worker) answerJob(ctx context.Context, m *jetstream.RawStreamMsg, model string) {
	id, reply := m.Header.Get(job.HeaderJob), m.Header.Get(job.HeaderReply)
	if id == "" {
		id = m.Header.Get(job.HeaderMsgID)
	}
	status, msg := http.StatusNotFound, fmt.Sprintf("model '%s' not found", requestedName(m.Data, model))
	if model == "" {
		status, msg = http.StatusBadRequest, fmt.Sprintf("subject %q names no model: the model token must encode a canonical name (docs/protocol.md)", m.Subject)
	}
	// Only the requester that published the job may hear about it: a job
	// whose subject names no requester, or another than its reply subject's,
	// is buried unanswered (docs/security.md).
	owner, _, err := job.ParseReplySubject(reply)
	requester, ok := job.SubjectRequester(m.Subject)
	answerable := err == nil && ok && owner == requester && job.ValidToken(id)
	// The job left the queue first (once-only among the scanning workers):
	// its record comes last.
	rec := jobRecord(m.Subject, m.Header)
	rec.Worker, rec.Outcome, rec.Error, rec.Queued = w.cfg.ID, audit.Failed, msg, m.Time.UTC()
	rec.QueueMS = max(time.Since(m.Time).Milliseconds(), 0) // It waited until now; it never ran.
	defer func() { w.writeAudit(ctx, rec, auditTimeout) }()
	if model == "" || !answerable {
		reason := msg
		if !answerable {
			reason += "; and no reply subject of the job's requester, or no valid job ID"
		}
		if err := w.q.Bury(ctx, m.Subject, m.Sequence, m.Header, m.Data, reason, 0, w.cfg.ID); err != nil {
			w.log.Warn("bury job", "job", id, "err", err)
		}
		rec.Outcome, rec.Error = audit.DeadLettered, reason
	}
	if answerable {
		rec.Status = status
		rep := job.Reply{Kind: job.KindError, Job: id, Attempt: 1, Seq: 1, Status: status, Error: msg, Data: job.ErrorBody(msg)}
		if err := w.nc.PublishMsg(queue.ReplyMsg(reply, rep)); err != nil {
			w.log.Warn("answer job of an unserved model", "job", id, "err", err)
			return
		}
	}
	w.log.Info("job for a model no worker serves answered and removed", "job", id, "subject", m.Subject, "status", status)
}

// requestedName is the model name as the request body gave it, when it is the
// subject's model; else the canonical name.
func requestedName(body []byte, model string) string {
	if name, ok := bodyModel(body); ok {
		if c, err := job.CanonicalModel(name); err == nil && c == model {
			return name
		}
	}
	return model
}
