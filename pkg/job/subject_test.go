package job

import (
	"errors"
	"testing"
)

func TestSubjects(t *testing.T) {
	if got, want := JobSubject("llama3.2:latest", Interactive, "alice"), "ollamaq.jobs.llama3_2e2_3alatest.interactive.alice"; got != want {
		t.Errorf("JobSubject = %q, want %q", got, want)
	}
	if got, want := JobFilter("llama3.2:latest", Batch), "ollamaq.jobs.llama3_2e2_3alatest.batch.*"; got != want {
		t.Errorf("JobFilter = %q, want %q", got, want)
	}
	if got, want := ConsumerName("llama3.2:latest", Batch), "llama3_2e2_3alatest_batch"; got != want {
		t.Errorf("ConsumerName = %q, want %q", got, want)
	}
	for _, s := range []string{"ollamaq.jobs.llama3_2e2_3alatest.interactive.alice", "ollamaq.queued.llama3_2e2_3alatest.interactive.alice", "ollamaq.dlq.llama3_2e2_3alatest.interactive.alice"} {
		m, c, r, err := ParseJobSubject(s)
		if err != nil || m != "llama3.2:latest" || c != Interactive || r != "alice" {
			t.Errorf("ParseJobSubject(%q) = %q, %q, %q, %v", s, m, c, r, err)
		}
	}
	for _, s := range []string{"ollamaq.jobs.x", "ollamaq.jobs.x_3a.interactive.a", "ollamaq.jobs.x.urgent.a", "other.jobs.x.batch.a", "ollamaq.jobs.x.batch.a.b", "ollamaq.jobs.x.batch."} {
		if _, _, _, err := ParseJobSubject(s); err == nil {
			t.Errorf("ParseJobSubject(%q) succeeded, want error", s)
		}
	}
	if _, _, _, err := ParseJobSubject("ollamaq.jobs.llama3_2e2_3alatest.interactive"); !errors.Is(err, ErrOldSubject) {
		t.Errorf("a subject without a requester: %v, want ErrOldSubject", err)
	}
	if r, ok := SubjectRequester("ollamaq.jobs.Not-Canonical.interactive.bob"); !ok || r != "bob" {
		t.Errorf("SubjectRequester = %q, %v", r, ok)
	}
}

func TestValidReply(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"ollamaq.reply.u1.job1", true},
		{"ollamaq.reply.u1.job1.extra", true},
		{"ollamaq.reply.u1", false},
		{"ollamaq.reply.*.job", false},
		{"ollamaq.reply.u1.>", false},
		{"ollamaq.jobs.m.interactive", false},
		{"$JS.API.STREAM.DELETE.OLLAMAQ_JOBS", false},
		{"ollamaq.reply..x", false},
	}
	for _, tt := range tests {
		if got := ValidReply(tt.in); got != tt.want {
			t.Errorf("ValidReply(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if a == b || len(a) != 26 || !ValidToken(a) {
		t.Fatalf("NewID gave %q and %q", a, b)
	}
}

func TestAuditSubject(t *testing.T) {
	tests := []struct {
		name, kind, model, requester, want string
	}{
		{"job", AuditJob, "llama3.2:latest", "alice", "ollamaq.audit.job.llama3_2e2_3alatest.alice"},
		{"no model", AuditAdmin, "", "ops", "ollamaq.audit.admin.-.ops"},
		{"no requester", AuditJob, "", "", "ollamaq.audit.job.-.-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AuditSubject(tt.kind, tt.model, tt.requester); got != tt.want {
				t.Errorf("AuditSubject(%q, %q, %q) = %q, want %q", tt.kind, tt.model, tt.requester, got, tt.want)
			}
		})
	}
}
