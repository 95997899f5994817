package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// macSecretForTests is the dispatchers' MAC secret the trail tests put in
// the key bucket, so that the MACs, and the golden files, are the same on
// every run.
var macSecretForTests = []byte("the dispatchers' MAC secret, 32+ bytes long")

// trail writes an audit trail by hand: jobs signed by a dispatcher for keys
// of two tenants, a forged claim and a tampered one, a NATS-native job, a
// management action, a record stored twice and a message that is no record.
func trail(t *testing.T, q *queue.Queue) {
	t.Helper()
	ctx := t.Context()
	kv, err := q.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, job.KeyMACEntry, macSecretForTests); err != nil {
		t.Fatal(err)
	}
	signed := func(r audit.Record) audit.Record {
		r.MAC = audit.Sign(macSecretForTests, r.Job, r.Requester, r.Key, r.Tenant)
		return r
	}
	tampered := signed(audit.Record{Job: "j7", Requester: "dispatcher", Key: "k1", Tenant: "acme"})
	tampered.Tenant = "globex"
	forged := audit.Record{Job: "j5", Requester: "mallory", Key: "k1", Tenant: "acme",
		MAC: audit.Sign([]byte("a secret that is not the dispatchers' one"), "j5", "mallory", "k1", "acme")}
	records := []audit.Record{
		signed(audit.Record{Job: "j1", Requester: "dispatcher", Key: "k1", Tenant: "acme", Route: "/api/chat", Model: "llama3.2:latest",
			Worker: "w0", Outcome: audit.Done, Status: 200, PromptTokens: 10, CompletionTokens: 20, QueueMS: 5, RunMS: 1500}),
		signed(audit.Record{Job: "j2", Requester: "dispatcher", Key: "k1", Tenant: "acme", Route: "/v1/chat/completions", Model: "qwen2.5:0.5b",
			Worker: "w1", Outcome: audit.Done, Status: 200, PromptTokens: 5, CompletionTokens: 5, QueueMS: 10, RunMS: 500}),
		signed(audit.Record{Job: "j3", Requester: "dispatcher", Key: "k2", Tenant: "acme", Route: "/api/generate", Model: "llama3.2:latest",
			Worker: "w0", Outcome: audit.Failed, Status: 500, Error: "model crashed", PromptTokens: 1, CompletionTokens: 1, QueueMS: 1, RunMS: 20}),
		signed(audit.Record{Job: "j4", Requester: "dispatcher", Key: "k3", Tenant: "globex", Route: "/api/chat", Model: "llama3.2:latest",
			Worker: "w1", Outcome: audit.Done, Status: 200, PromptTokens: 100, CompletionTokens: 200, QueueMS: 2500, RunMS: 61400}),
		withJob(forged, audit.Record{Route: "/api/chat", Model: "llama3.2:latest", Worker: "w0", Outcome: audit.Done, Status: 200,
			PromptTokens: 1000, CompletionTokens: 1000, RunMS: 100}),
		{Job: "j6", Requester: "alice", Route: "/api/generate", Model: "llama3.2:latest", Worker: "w0", Outcome: audit.Done,
			PromptTokens: 7, CompletionTokens: 3, QueueMS: 3, RunMS: 30},
		withJob(tampered, audit.Record{Route: "/api/chat", Model: "qwen2.5:0.5b", Worker: "w1", Outcome: audit.Canceled, Status: 499,
			PromptTokens: 2, CompletionTokens: 2, RunMS: 10}),
		{Kind: job.AuditAdmin, Requester: "ops", Action: "keys.create", Key: "k1", Tenant: "acme", Outcome: audit.Done},
		// A dispatcher's management actions name the key of the request.
		signed(audit.Record{Kind: job.AuditAdmin, Job: "req1", Requester: "dispatcher", Action: "pull", Key: "k1", Tenant: "acme",
			Route: "/api/pull", Model: "llama3.2:latest", Status: 200, Outcome: audit.Done, RunMS: 9000}),
		{Kind: job.AuditAdmin, Job: "req2", Requester: "mallory", Action: "delete", Key: "k2", Tenant: "acme",
			Route: "/api/delete", Model: "llama3.2:latest", Status: 200, Outcome: audit.Done},
	}
	for i, r := range records {
		if r.Kind == "" {
			r.Kind = job.AuditJob
		}
		r.Time = clock.Add(time.Duration(i) * time.Second)
		if err := audit.Publish(ctx, q.JetStream(), r); err != nil {
			t.Fatal(err)
		}
		if r.Job == "j1" {
			// Stored again past the stream's de-duplication: it counts once.
			b, _ := json.Marshal(r) // A record always marshals.
			if _, err := q.JetStream().Publish(ctx, r.Subject(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := q.JetStream().Publish(ctx, "ollamaq.audit.job.-.x", []byte("not a record")); err != nil {
		t.Fatal(err)
	}
}

// withJob is claim's requester, job, key, tenant and MAC with the rest of r.
func withJob(claim, r audit.Record) audit.Record {
	r.Job, r.Requester, r.Key, r.Tenant, r.MAC = claim.Job, claim.Requester, claim.Key, claim.Tenant, claim.MAC
	return r
}

func TestUsageCommand(t *testing.T) {
	q, c := deployment(t)
	trail(t, q)
	c.now = time.Now // --since counts back from when the stream stored the records

	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"usage_tenant.txt", nil},
		{"usage_key.txt", []string{"--by", "key", "--since", "1h"}},
		{"usage_model.txt", []string{"--by", "model"}},
		{"usage_key.json", []string{"--by", "key", "--json"}},
		{"usage_model_qwen.json", []string{"--by", "model", "--model", "Qwen2.5:0.5b", "--json"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			code, out, errOut := c.run(append([]string{"usage"}, tt.args...)...)
			// The message that is no record is on no model's subject.
			skipped := "skipped 1 messages in OLLAMAQ_AUDIT that are not audit records"
			if code != exitOK || strings.Contains(errOut, skipped) == slices.Contains(tt.args, "--model") {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, out)
		})
	}

	// The forged claim counts for its requester, never for acme or k1.
	_, out, _ := c.run("usage", "--json")
	var rows []usageRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		switch {
		case r.Tenant == "acme" && (r.Requests != 3 || r.TotalTokens != 42 || !*r.Verified):
			t.Errorf("acme: %+v; want its 3 signed jobs and 42 tokens", r)
		case r.Tenant == "mallory" && *r.Verified:
			t.Errorf("mallory's forged claim verified: %+v", r)
		}
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"nothing since", []string{"usage", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, exitOK,
			"TENANT", "no jobs in the audit trail since"},
		{"all", []string{"usage", "--since", "all", "--json"}, exitOK, `"tenant": "acme"`, ""},
		{"bad --by", []string{"usage", "--by", "worker"}, exitUsage, "", `--by "worker": want tenant, key or model`},
		{"bad --since", []string{"usage", "--since", "yesterday"}, exitUsage, "", `--since "yesterday": want a duration`},
		{"bad --model", []string{"usage", "--model", "a b"}, exitUsage, "", `--model "a b" is not an Ollama model name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := c.run(tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}

// TestUsageUnsigned: before any dispatcher made the MAC secret, nothing is
// verified, however a record is signed.
func TestUsageUnsigned(t *testing.T) {
	q, c := deployment(t)
	c.now = time.Now
	r := audit.Record{Kind: job.AuditJob, Job: "j1", Requester: "dispatcher", Key: "k1", Tenant: "acme", Outcome: audit.Done, PromptTokens: 1}
	r.MAC = audit.Sign(nil, r.Job, r.Requester, r.Key, r.Tenant) // what an empty secret would verify
	if err := audit.Publish(t.Context(), q.JetStream(), r); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := c.run("usage", "--by", "key")
	if code != exitOK || !strings.Contains(out, "(none: requester dispatcher)") || strings.Contains(out, "acme") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s\nwant the job counted for its requester", code, out, errOut)
	}
}
