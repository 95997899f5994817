package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAuditCommand(t *testing.T) {
	q, c := deployment(t)
	trail(t, q)
	c.now = time.Now // --since counts back from when the stream stored the records

	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"audit.txt", nil},
		{"audit_jobs.jsonl", []string{"--kind", "job", "--model", "qwen2.5:0.5b", "--json"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			code, out, errOut := c.run(append([]string{"audit"}, tt.args...)...)
			legend := "?: a key and tenant without a dispatcher's valid MAC: claimed, not verified"
			if code != exitOK || strings.Contains(errOut, legend) != (tt.golden == "audit.txt") {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, out)
		})
	}

	// lines runs audit with args and returns each record's job or action,
	// its verified mark, and stderr.
	lines := func(args ...string) (string, string) {
		t.Helper()
		code, out, errOut := c.run(append([]string{"audit", "--json"}, args...)...)
		if code != exitOK {
			t.Fatalf("audit %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		var got []string
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r auditRow
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("audit %s: a line is not a record: %v\n%s", strings.Join(args, " "), err, sc.Text())
			}
			mark := ""
			if r.Verified {
				mark = "+"
			}
			got = append(got, r.Job+r.Action+mark)
		}
		return strings.Join(got, " "), errOut
	}
	tests := []struct {
		name    string
		args    []string
		want    string // jobs or actions, + for verified
		wantErr string
	}{
		{"all", nil, "j1+ j1+ j2+ j3+ j4+ j5 j6 j7 keys.create req1pull+ req2delete", "skipped 1 messages"},
		{"key: signed, claimed and acted on", []string{"--key", "k1"}, "j1+ j1+ j2+ j5 j7 keys.create req1pull+", ""},
		{"tenant: stated, and a requester's own", []string{"--tenant", "acme"}, "j1+ j1+ j2+ j3+ j5 keys.create req1pull+ req2delete", ""},
		{"tenant of a NATS-native job", []string{"--tenant", "alice"}, "j6", ""},
		{"kind", []string{"--kind", "admin"}, "keys.create req1pull+ req2delete", ""},
		{"model", []string{"--model", "llama3.2", "--kind", "job"}, "j1+ j1+ j3+ j4+ j5 j6", ""},
		{"limit keeps the newest", []string{"--kind", "job", "--limit", "2"}, "j6 j7", "the newest 2 of 8 records (--limit 0 prints all)"},
		{"nothing since", []string{"--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "", "no audit records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errOut := lines(tt.args...)
			if got != tt.want || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("audit %s: %q, stderr %q; want %q, stderr with %q", strings.Join(tt.args, " "), got, errOut, tt.want, tt.wantErr)
			}
		})
	}
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"audit", "--kind", "jobs"}, `--kind "jobs": want job or admin`},
		{[]string{"audit", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"audit", "--since", "-1h"}, `--since "-1h"`},
		{[]string{"audit", "x"}, "audit takes no arguments"},
	} {
		if code, _, errOut := c.run(tt.args...); code != exitUsage || !strings.Contains(errOut, tt.wantErr) {
			t.Errorf("ollamaq %s = %d, stderr %q; want usage, with %q", strings.Join(tt.args, " "), code, errOut, tt.wantErr)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := clock
	tests := []struct {
		in   string
		want time.Time // zero with ok: all
		ok   bool
	}{
		{"24h", now.Add(-24 * time.Hour), true},
		{"7d", now.Add(-7 * 24 * time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"2026-01-01T00:00:00Z", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"all", time.Time{}, true},
		{"", time.Time{}, false},
		{"0s", time.Time{}, false},
		{"-1h", time.Time{}, false},
		{"2026-01-01", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if !got.Equal(tt.want) || (err == nil) != tt.ok {
			t.Errorf("parseSince(%q) = %s, %v; want %s, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
