// Package audit is the audit trail and usage ledger of a fleet: one record
// per job, written by whoever ends it (the worker that ran it, the reaper
// that gave up on it, the dispatcher that withdrew it before any worker
// took it), and one per management action, in the OLLAMAQ_AUDIT stream. A
// record says who, what, where, how it ended, the tokens and the timings;
// never the prompt or the answer (docs/security.md).
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Outcomes of a job record.
const (
	Done         = "done"          // answered in full
	Failed       = "failed"        // answered with an error (Status, Error)
	Canceled     = "canceled"      // its requester canceled it
	Expired      = "expired"       // waited past its deadline; not run
	DeadLettered = "dead_lettered" // given up on; in OLLAMAQ_DLQ
	Withdrawn    = "withdrawn"     // its requester took it back before any worker did
)

// Record is one entry of the audit trail.
type Record struct {
	Time time.Time `json:"time"` // when the record was written
	Kind string    `json:"kind"` // job.AuditJob or job.AuditAdmin
	Job  string    `json:"job,omitempty"`
	// Requester is the job's requester token (its NATS user, which the
	// server enforces under auth), or the NATS user of a management action.
	Requester string `json:"requester"`
	// Key and Tenant are the API key ID and tenant the requester stated;
	// MAC is the dispatchers' signature over them (Verify). A NATS-native
	// job has none: its tenant is its requester.
	Key    string `json:"key,omitempty"`
	Tenant string `json:"tenant,omitempty"`
	MAC    string `json:"mac,omitempty"`
	// Action is what a management record did: pull, delete, copy,
	// keys.create, keys.revoke, keys.rotate.
	Action  string `json:"action,omitempty"`
	Route   string `json:"route,omitempty"`
	Model   string `json:"model,omitempty"`
	Class   string `json:"class,omitempty"`
	Batch   string `json:"batch,omitempty"`
	Worker  string `json:"worker,omitempty"`
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	Error   string `json:"error,omitempty"`
	// Attempts is how many deliveries the job had.
	Attempts         int `json:"attempts,omitempty"`
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	// Queued is when the job was queued; QueueMS the wait until the attempt
	// that ended it started, RunMS that attempt's run.
	Queued  time.Time `json:"queued,omitzero"`
	QueueMS int64     `json:"queue_ms"`
	RunMS   int64     `json:"run_ms"`
}

// Subject is where the record is published.
func (r Record) Subject() string {
	return job.AuditSubject(r.Kind, r.Model, r.Requester)
}

// Publish stores r in the audit stream and waits for the stream to have it.
// A job's record is de-duplicated by its requester and job ID within the
// stream's duplicate window, so two processes that both end a job (an ack
// lost, the job run again) leave one record.
func Publish(ctx context.Context, js jetstream.JetStream, r Record) error {
	wait, err := Send(js, r)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// Send is Publish in two halves: it sends r without waiting, and wait
// waits for the stream to have it. A worker sends a job's record, settles
// the job, then waits: the two round trips overlap, and the record still
// reaches the server before the settlement on the same connection.
func Send(js jetstream.JetStream, r Record) (wait func(context.Context) error, err error) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
	var opts []jetstream.PublishOpt
	if r.Kind == job.AuditJob && r.Job != "" {
		opts = append(opts, jetstream.WithMsgID("audit."+r.Requester+"."+r.Job))
	}
	subject := r.Subject()
	fut, err := js.PublishAsync(subject, b, opts...)
	if err != nil {
		return nil, fmt.Errorf("audit: publish %s: %w", subject, err)
	}
	return func(ctx context.Context) error {
		select {
		case <-fut.Ok():
			return nil
		case err := <-fut.Err():
			return fmt.Errorf("audit: publish %s: %w", subject, err)
		case <-ctx.Done():
			return fmt.Errorf("audit: publish %s: %w", subject, ctx.Err())
		}
	}, nil
}

// Sign is the MAC a dispatcher puts on a job (job.HeaderKeyMAC) over its
// ID, requester, key and tenant, with the shared secret (apikey.MACSecret).
func Sign(secret []byte, jobID, requester, key, tenant string) string {
	m := hmac.New(sha256.New, secret)
	for _, s := range []string{jobID, requester, key, tenant} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verified tells whether r's key and tenant were signed by a dispatcher
// holding secret, rather than claimed by the requester itself.
func (r Record) Verified(secret []byte) bool {
	if r.Key == "" || r.MAC == "" {
		return false
	}
	return hmac.Equal([]byte(r.MAC), []byte(Sign(secret, r.Job, r.Requester, r.Key, r.Tenant)))
}
