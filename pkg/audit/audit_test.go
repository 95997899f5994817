package audit_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestVerified(t *testing.T) {
	signed := audit.Record{Kind: job.AuditJob, Job: "j1", Requester: "dispatcher", Key: "k1", Tenant: "acme"}
	signed.MAC = audit.Sign(secret, signed.Job, signed.Requester, signed.Key, signed.Tenant)
	tests := []struct {
		name   string
		change func(*audit.Record)
		secret []byte
		want   bool
	}{
		{"signed", func(*audit.Record) {}, secret, true},
		{"other secret", func(*audit.Record) {}, []byte("another secret, as long as the first"), false},
		{"no secret", func(*audit.Record) {}, nil, false},
		{"other job", func(r *audit.Record) { r.Job = "j2" }, secret, false},
		{"other requester", func(r *audit.Record) { r.Requester = "mallory" }, secret, false},
		{"other key", func(r *audit.Record) { r.Key = "k2" }, secret, false},
		{"other tenant", func(r *audit.Record) { r.Tenant = "globex" }, secret, false},
		{"no MAC", func(r *audit.Record) { r.MAC = "" }, secret, false},
		{"no key", func(r *audit.Record) { r.Key = ""; r.MAC = audit.Sign(secret, r.Job, r.Requester, "", r.Tenant) }, secret, false},
		{"garbage MAC", func(r *audit.Record) { r.MAC = "not a mac" }, secret, false},
		// The fields are separated: moving bytes from one to the next is another MAC.
		{"shifted fields", func(r *audit.Record) { r.Job, r.Requester = "j1d", "ispatcher" }, secret, false},
		// What a MAC does not cover may change: the counts are the worker's.
		{"other counts", func(r *audit.Record) { r.PromptTokens, r.Outcome = 99, audit.Failed }, secret, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := signed
			tt.change(&r)
			if got := r.Verified(tt.secret); got != tt.want {
				t.Errorf("Verified = %v, want %v", got, tt.want)
			}
		})
	}
	if a, b := audit.Sign(secret, "ab", "c", "k", "t"), audit.Sign(secret, "a", "bc", "k", "t"); a == b {
		t.Error("Sign does not separate its fields")
	}
	if a, b := audit.Sign(secret, "j", "r", "k", "t"), audit.Sign(secret, "j", "r", "k", "t"); a != b {
		t.Error("Sign is not deterministic")
	}
}

func TestPublish(t *testing.T) {
	b := natstest.Start(t)
	q, err := queue.SetupConn(t.Context(), natstest.Connect(t, b), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	js := q.JetStream()
	ctx := t.Context()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := audit.Record{Time: at, Kind: job.AuditJob, Job: "j1", Requester: "alice", Model: "llama3.2:latest", Outcome: audit.Done,
		PromptTokens: 3, CompletionTokens: 4}
	// Two processes ending the same job leave one record.
	for range 2 {
		if err := audit.Publish(ctx, js, rec); err != nil {
			t.Fatal(err)
		}
	}
	// Management actions are not de-duplicated, and get a time if they have none.
	admin := audit.Record{Kind: job.AuditAdmin, Requester: "ops", Action: "keys.revoke", Key: "k1", Outcome: audit.Done}
	for range 2 {
		if err := audit.Publish(ctx, js, admin); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 3 {
		t.Fatalf("%d records stored, want 3", n)
	}
	tests := []struct {
		seq           uint64
		subject, kind string
	}{{1, "ollamaq.audit.job.llama3_2e2_3alatest.alice", job.AuditJob}, {2, "ollamaq.audit.admin.-.ops", job.AuditAdmin}}
	for _, tt := range tests {
		m, err := s.GetMsg(ctx, tt.seq)
		if err != nil {
			t.Fatal(err)
		}
		var got audit.Record
		if err := json.Unmarshal(m.Data, &got); err != nil {
			t.Fatal(err)
		}
		if m.Subject != tt.subject || got.Kind != tt.kind || got.Time.IsZero() {
			t.Errorf("record %d on %s: %+v; want subject %s, kind %s and a time", tt.seq, m.Subject, got, tt.subject, tt.kind)
		}
	}
}
