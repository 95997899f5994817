package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Job is one job to publish.
type Job struct {
	ID    string    // job ID; also the Nats-Msg-Id, so a retried publish is not queued twice
	Model string    // canonical model name
	Class job.Class // interactive or batch
	Route string    // Ollama route, e.g. /api/chat
	Reply string    // reply subject
	Body  []byte    // the Ollama request JSON as the client sent it
	// BodyType is the Content-Type of a body that is a form, not JSON (a
	// transcription's, job.Route.Form); "" for JSON.
	BodyType string
	// Wait bounds how long the job may wait in the queue. The stream deletes it
	// after Wait (Nats-TTL, whole seconds) and workers refuse it after its
	// deadline. Zero means no bound.
	Wait time.Duration
	// Key, Tenant and MAC are who the job is for: the HTTP client's API
	// key ID and tenant, and the dispatchers' MAC over them (audit.Sign).
	// Empty when the requester has no API key to state.
	Key, Tenant, MAC string
	// Live says the requester answers resume requests for the job while it
	// wants the answer (job.HeaderLive), so workers drop the job once it is
	// gone. Requester.Submit sets it.
	Live bool
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
	for h, v := range map[string]string{job.HeaderKey: j.Key, job.HeaderTenant: j.Tenant, job.HeaderKeyMAC: j.MAC, job.HeaderBodyType: j.BodyType} {
		if v != "" {
			msg.Header.Set(h, v)
		}
	}
	if j.Live {
		msg.Header.Set(job.HeaderLive, "1")
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(j.ID)}
	if j.Wait > 0 {
		msg.Header.Set(job.HeaderDeadline, time.Now().Add(j.Wait).UTC().Format(time.RFC3339Nano))
		opts = append(opts, jetstream.WithMsgTTL(j.Wait.Round(time.Second)+time.Second))
	}
	ack, err := q.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish job %s: %w", j.ID, err)
	}
	return ack, nil
}
