package audit_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

func TestRead(t *testing.T) {
	b := natstest.Start(t)
	q, err := queue.SetupConn(t.Context(), natstest.Connect(t, b), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	js := q.JetStream()
	ctx := t.Context()
	if _, err := audit.Read(ctx, js, audit.Query{}, func(r audit.Record) error {
		t.Errorf("a record in an empty stream: %+v", r)
		return nil
	}); err != nil {
		t.Fatalf("Read of an empty stream: %v", err)
	}
	records := []audit.Record{
		{Kind: job.AuditJob, Job: "j1", Requester: "alice", Model: "llama3.2:latest", Outcome: audit.Done},
		{Kind: job.AuditAdmin, Requester: "ops", Action: "keys.create", Key: "k1", Outcome: audit.Done},
		{Kind: job.AuditJob, Job: "j2", Requester: "bob", Model: "qwen2.5:0.5b", Outcome: audit.Failed},
		{Kind: job.AuditJob, Job: "j3", Requester: "alice", Model: "llama3.2:latest", Outcome: audit.Canceled},
	}
	for _, r := range records {
		if err := audit.Publish(ctx, js, r); err != nil {
			t.Fatal(err)
		}
	}
	// Not a record: skipped and counted.
	if _, err := js.Publish(ctx, "ollamaq.audit.job.-.x", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	third, err := s.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		q           audit.Query
		want        string // the records' jobs or actions, in order
		wantSkipped int
	}{
		{"all", audit.Query{}, "j1 keys.create j2 j3", 1},
		{"jobs", audit.Query{Kind: job.AuditJob}, "j1 j2 j3", 1},
		{"admin", audit.Query{Kind: job.AuditAdmin}, "keys.create", 0},
		{"model", audit.Query{Model: "llama3.2:latest"}, "j1 j3", 0},
		{"jobs of a model", audit.Query{Kind: job.AuditJob, Model: "qwen2.5:0.5b"}, "j2", 0},
		{"no such model", audit.Query{Model: "phi3:latest"}, "", 0},
		{"since", audit.Query{Since: third.Time}, "j2 j3", 1},
		{"since now", audit.Query{Since: time.Now().Add(time.Hour)}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			skipped, err := audit.Read(ctx, js, tt.q, func(r audit.Record) error {
				got = append(got, r.Job+r.Action)
				return nil
			})
			if err != nil || strings.Join(got, " ") != tt.want || skipped != tt.wantSkipped {
				t.Errorf("Read = %q, %d skipped, %v; want %q, %d skipped", got, skipped, err, tt.want, tt.wantSkipped)
			}
		})
	}

	// What is stored while Read runs is left out: it ends.
	n := 0
	_, err = audit.Read(ctx, js, audit.Query{Kind: job.AuditJob}, func(audit.Record) error {
		n++
		return audit.Publish(ctx, js, audit.Record{Kind: job.AuditJob, Requester: "carol", Job: fmt.Sprint("late", n), Outcome: audit.Done})
	})
	if err != nil || n != 3 {
		t.Errorf("Read while publishing: %d records, %v; want the 3 stored before", n, err)
	}
	// fn's error stops it.
	stop := errors.New("stop")
	if _, err := audit.Read(ctx, js, audit.Query{}, func(audit.Record) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Read = %v, want fn's error", err)
	}

	if err := js.DeleteStream(ctx, job.AuditStream); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Read(ctx, js, audit.Query{}, func(audit.Record) error { return nil }); !errors.Is(err, audit.ErrNoStream) {
		t.Errorf("Read without the stream = %v, want ErrNoStream", err)
	}
}
