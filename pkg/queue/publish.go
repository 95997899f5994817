package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Job is one job to publish.
type Job struct {
	ID    string    // job ID; also the Nats-Msg-Id, so a retried publish is not queued twice
	Model string    // canonical model name
	Class job.Class // interactive, async or batch
	Route string    // Ollama route, e.g. /api/chat
	Reply string    // reply subject
	Body  []byte    // the Ollama request JSON as the client sent it
	// BodyType is the Content-Type of a body that is a form, not JSON (a
	// transcription's, job.Route.Form); "" for JSON.
	BodyType string
	// Wait bounds how long the job may wait in the queue: workers refuse it
	// after its deadline, and the stream deletes it RunMargin later (JobTTL).
	// Zero means no bound.
	Wait time.Duration
	// Key, Tenant and MAC are who the job is for: the HTTP client's API
	// key ID and tenant, and the dispatchers' MAC over them (audit.Sign).
	// Empty when the requester has no API key to state.
	Key, Tenant, MAC string
	// Live says the requester answers resume requests for the job while it
	// wants the answer (job.HeaderLive), so workers drop the job once it is
	// gone. Requester.Submit sets it.
	Live bool
	// Positions asks for queued replies while the job waits
	// (job.HeaderPositions).
	Positions bool
	// Traceparent and Tracestate are the W3C trace context the job is part
	// of (job.HeaderTraceparent, job.HeaderTracestate); empty: none.
	Traceparent, Tracestate string
	// Prefer is the worker that served the previous turn of the job's
	// session (job.HeaderPrefer), empty for any; PreferRecord the revision
	// of its node record when that turn ended (job.HeaderPreferRecord), 0
	// if unknown.
	Prefer       string
	PreferRecord uint64
}

// Publish stores the job in the stream and returns once JetStream has it. The
// job is published for the requester its reply subject belongs to.
func (q *Queue) Publish(ctx context.Context, j Job) (*jetstream.PubAck, error) {
	requester, _, err := job.ParseReplySubject(j.Reply)
	if err != nil {
		return nil, fmt.Errorf("publish job %s: %w", j.ID, err)
	}
	msg := nats.NewMsg(job.JobSubject(j.Model, j.Class, requester))
	msg.Data = j.Body
	msg.Header.Set(job.HeaderJob, j.ID)
	msg.Header.Set(job.HeaderRoute, j.Route)
	msg.Header.Set(job.HeaderReply, j.Reply)
	for h, v := range map[string]string{job.HeaderKey: j.Key, job.HeaderTenant: j.Tenant, job.HeaderKeyMAC: j.MAC, job.HeaderBodyType: j.BodyType,
		job.HeaderTraceparent: j.Traceparent, job.HeaderTracestate: j.Tracestate, job.HeaderPrefer: j.Prefer} {
		if v != "" {
			msg.Header.Set(h, v)
		}
	}
	if j.Live {
		msg.Header.Set(job.HeaderLive, "1")
	}
	if j.Prefer != "" && j.PreferRecord != 0 {
		msg.Header.Set(job.HeaderPreferRecord, strconv.FormatUint(j.PreferRecord, 10))
	}
	if j.Positions {
		msg.Header.Set(job.HeaderPositions, "1")
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(j.ID)}
	if j.Wait > 0 {
		msg.Header.Set(job.HeaderDeadline, time.Now().Add(j.Wait).UTC().Format(time.RFC3339Nano))
		opts = append(opts, jetstream.WithMsgTTL(JobTTL(j.Wait)))
	}
	// A publish JetStream refused for now is tried again for a while, no
	// longer than the job may wait: the job ID makes a second copy
	// impossible.
	retryUntil := time.Now().Add(min(cmp.Or(j.Wait, publishRetry), publishRetry))
	for wait := publishBackoff; ; wait = min(2*wait, time.Second) {
		// Each try gets its own bound: a publish whose answer was lost (the
		// stream's leader went away before it answered) would otherwise
		// wait for all of ctx.
		actx, cancel := context.WithTimeout(ctx, publishTry)
		ack, err := q.js.PublishMsg(actx, msg, opts...)
		cancel()
		if err == nil {
			return ack, nil
		}
		if !retryable(ctx, err) || time.Now().Add(wait).After(retryUntil) {
			return nil, fmt.Errorf("publish job %s: %w", j.ID, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish job %s: %w", j.ID, errors.Join(err, ctx.Err()))
		case <-time.After(wait):
		}
	}
}

// errTooManyRequests is JetStream's 429 "too many requests" on a publish:
// the stream holds more publishes not yet stored than the server buffers
// (its jetstream max_buffered_size, 128 MiB by default), as when many
// requests of several MiB arrive at once (docs/operations.md, "Large
// requests").
const errTooManyRequests jetstream.ErrorCode = 10167

// publishBackoff is the first wait before a refused publish is tried again;
// it doubles up to a second. publishRetry bounds the retries, or the job's
// queue wait if that is shorter: a server that does not answer for that
// long is down, not busy.
// publishTry bounds one try: nats.go's own default for a request without
// a deadline.
const (
	publishBackoff = 50 * time.Millisecond
	publishRetry   = 10 * time.Second
	publishTry     = 5 * time.Second
)

// RunMargin is how long a job stays in the stream after its queue wait
// ends, for a job taken by then to run and fail over: JetStream deletes a
// message at its TTL whether or not a worker holds it, and a job no longer
// in the stream cannot be redelivered when its worker dies (its requester
// then ends it with an error, see Stream.Follow).
const RunMargin = time.Hour

// JobTTL is the Nats-TTL of a job that may wait for wait: the wait and
// RunMargin, in whole seconds. Workers refuse a job once its deadline
// (Ollamaq-Deadline) has passed, so the TTL only clears out the jobs
// nobody took.
func JobTTL(wait time.Duration) time.Duration {
	return wait.Round(time.Second) + RunMargin
}

// retryable tells a publish that may succeed if tried again: JetStream's
// 429, or no answer in the library's own time bound while ctx goes on (the
// job may then be stored already; the job ID deduplicates the retry).
func retryable(ctx context.Context, err error) bool {
	var api *jetstream.APIError
	switch {
	case ctx.Err() != nil:
		return false
	case errors.As(err, &api):
		return api.ErrorCode == errTooManyRequests
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}
