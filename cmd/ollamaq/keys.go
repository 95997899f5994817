package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// keysUsage and keysMore are the help of 'ollamaq keys', before and after
// the list of its commands.
const (
	keysUsage = `Manages the HTTP API keys in the KV bucket ollamaq_keys, which every
dispatcher watches: a new key works on every dispatcher moments after create,
and is refused moments after revoke. A key belongs to a tenant (the name
'ollamaq usage' sums by), has a role (user: inference and listings; admin:
also pull, delete, copy and /metrics), the models it may use, and optional
bounds on requests and tokens per minute.

The bucket keeps the SHA-256 of each secret, never the secret: create and
rotate print it once. Each create, revoke and rotate writes an audit record
('ollamaq audit --kind admin'). A dispatcher creates the bucket when it
starts; under NATS auth these commands need admin credentials.
`
	keysMore = `Examples:
  ollamaq keys create ci --tenant acme --models 'llama3*,qwen2.5:0.5b' --rpm 60 --expires 30d
  ollamaq keys list
  ollamaq keys rotate k1f3x9q2m7ab
  ollamaq keys revoke k1f3x9q2m7ab
  curl -H "Authorization: Bearer $SECRET" http://gateway:11435/api/tags
`
)

// keysTimeout bounds each keys command once connected.
const keysTimeout = 30 * time.Second

// The actions of the audit records the keys commands write.
const (
	actionCreate = "keys.create"
	actionRevoke = "keys.revoke"
	actionRotate = "keys.rotate"
)

// noKeyBucket is what keys commands say when a deployment has no key bucket.
const noKeyBucket = "no API key bucket on this NATS server: start a dispatcher (it creates it) first"

// keyRow is how a key is printed: its record without the hash, and its
// state.
type keyRow struct {
	ID      string      `json:"id"`
	Name    string      `json:"name"`
	Tenant  string      `json:"tenant"`
	Role    apikey.Role `json:"role"`
	Models  []string    `json:"models,omitempty"`
	RPM     int         `json:"rpm,omitempty"`
	TPM     int         `json:"tpm,omitempty"`
	Lane    job.Class   `json:"lane,omitempty"`
	Created time.Time   `json:"created"`
	Rotated time.Time   `json:"rotated,omitzero"`
	Expires time.Time   `json:"expires,omitzero"`
	Revoked time.Time   `json:"revoked,omitzero"`
	// State is active, expired or revoked at the time of the listing.
	State string `json:"state"`
}

func toKeyRow(k apikey.Key, now time.Time) keyRow {
	return keyRow{ID: k.ID, Name: k.Name, Tenant: k.Tenant, Role: k.Role, Models: k.Models, RPM: k.RPM, TPM: k.TPM, Lane: k.Lane,
		Created: k.Created, Rotated: k.Rotated, Expires: k.Expires, Revoked: k.Revoked, State: keyState(k, now)}
}

// keyState is what Key.Check would say of the right secret at now.
func keyState(k apikey.Key, now time.Time) string {
	switch {
	case !k.Revoked.IsZero():
		return "revoked"
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return "expired"
	}
	return "active"
}

// secretOutput is what create and rotate print with --json.
type secretOutput struct {
	Key    keyRow `json:"key"`
	Secret string `json:"secret"`
}

// printSecret prints a key's secret on stdout, alone on its line (or with
// --json, with the record), and notice on stderr: the one time it is shown.
func (e *env) printSecret(asJSON bool, k apikey.Key, secret, notice string) int {
	if asJSON {
		if code := e.printJSON(secretOutput{Key: toKeyRow(k, e.now()), Secret: secret}); code != exitOK {
			return code
		}
	} else if _, err := fmt.Fprintln(e.stdout, secret); err != nil {
		return e.fail(exitFailed, "write the secret: %v", err)
	}
	fmt.Fprintln(e.stderr, notice)
	return exitOK
}

// keysFunc is a keys command's work on the store, once it is bound.
type keysFunc func(ctx context.Context, q *queue.Queue, s *apikey.Store) int

// withKeys connects, binds the key bucket and does work with it, within
// keysTimeout. It returns work's exit code, or exitConnect when it cannot
// connect or the bucket is not there.
func (e *env) withKeys(ctx context.Context, work keysFunc) int {
	return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
		ctx, cancel := context.WithTimeout(ctx, keysTimeout)
		defer cancel()
		bctx, bcancel := context.WithTimeout(ctx, e.conn.timeout)
		kv, err := q.Keys(bctx)
		bcancel()
		if err != nil {
			return e.connectFailed(bindError(q, err, noKeyBucket))
		}
		return work(ctx, q, apikey.NewStore(kv))
	})
}

// bindError words a failure to bind a stream or bucket that queue.Open
// does not bind (the key bucket, the audit stream) as a connect error;
// missing, if set, is what to say when it does not exist. A request the credentials
// may not publish gets no answer: the reason is the connection's last
// error, which the server sent on the side.
func bindError(q *queue.Queue, err error, missing string) error {
	nc := q.JetStream().Conn()
	last := nc.LastError()
	switch {
	case missing != "" && (errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)):
		return connFailed("%s", missing)
	case errors.Is(last, nats.ErrPermissionViolation):
		return connFailed("NATS at %s does not permit these credentials what ollamaq needs (%v)", nc.ConnectedUrlRedacted(), last)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return connFailed("NATS at %s does not answer JetStream requests", nc.ConnectedUrlRedacted())
	}
	return connFailed("%v", err)
}

// keyFailed prints an error of the key store and returns its exit code.
func (e *env) keyFailed(err error) int {
	msg := strings.TrimPrefix(err.Error(), "apikey: ")
	switch {
	case errors.Is(err, apikey.ErrNotFound):
		return e.fail(exitFailed, "%s (see 'ollamaq keys list')", msg)
	case errors.Is(err, context.DeadlineExceeded):
		return e.fail(exitFailed, "timed out")
	case errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoResponders):
		return e.fail(exitConnect, "%s", msg)
	}
	return e.fail(exitFailed, "%s", msg)
}

// requester is the requester token of ollamaq's audit records: the name in
// its credentials, which the inbox prefix and permissions are bound to, else
// "ollamaq".
func (e *env) requester() string {
	if auth.ValidName(e.user) {
		return e.user
	}
	return "ollamaq"
}

// auditKey writes the audit record of action on key k.
func (e *env) auditKey(ctx context.Context, q *queue.Queue, action string, k apikey.Key) error {
	return audit.Publish(ctx, q.JetStream(), audit.Record{Time: e.now().UTC(), Kind: job.AuditAdmin, Requester: e.requester(),
		Action: action, Key: k.ID, Tenant: k.Tenant, Outcome: audit.Done})
}

// auditFailed says that action on key id was done but not recorded.
func (e *env) auditFailed(id, done string, err error) int {
	return e.fail(exitFailed, "key %s %s, but its audit record was not written: %v", id, done, err)
}

// parseModels parses --models: comma-separated names, lower-cased; a name
// without * is made canonical (llama3.2 becomes llama3.2:latest), a pattern
// is checked for the characters of model names.
func parseModels(s string) ([]string, error) {
	var out []string
	for m := range strings.SplitSeq(s, ",") {
		m = strings.ToLower(strings.TrimSpace(m))
		switch {
		case m == "":
			continue
		case !strings.Contains(m, "*"):
			c, err := job.CanonicalModel(m)
			if err != nil {
				return nil, fmt.Errorf("model %q is not an Ollama model name", m)
			}
			m = c
		case !validPattern(m):
			return nil, fmt.Errorf("model pattern %q: want the characters of model names (letters, digits, . _ - : /) and * for any run of them", m)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// validPattern reports whether p, lower-case, is made of the characters
// model names have, and *.
func validPattern(p string) bool {
	if len(p) > 256 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._-:/*", c) >= 0) {
			return false
		}
	}
	return true
}

func writeKeys(w io.Writer, rows []keyRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTENANT\tROLE\tMODELS\tRPM\tTPM\tLANE\tCREATED\tEXPIRES\tSTATE")
	for _, r := range rows {
		models := strings.Join(r.Models, ",")
		if models == "" {
			models = "any"
		}
		lane := cmp.Or(r.Lane, job.Interactive)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Tenant, r.Role, models, bound(r.RPM), bound(r.TPM), lane,
			r.Created.UTC().Format(time.DateOnly), expiry(r.Expires, now), r.State)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}

// bound formats a rate limit: "-" for none.
func bound(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// expiry formats when a key expires: never, in how long when that is
// within two days, else the date.
func expiry(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	if left := t.Sub(now); left > 0 && left < 48*time.Hour {
		return "in " + left.Round(time.Minute).String()
	}
	return t.UTC().Format(time.DateOnly)
}
