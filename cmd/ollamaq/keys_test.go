package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestKeysCommands creates, lists, rotates and revokes keys as an operator
// would, and checks each step against the bucket: the printed secret is the
// key's, the old one stops working, and the hash is never printed.
func TestKeysCommands(t *testing.T) {
	q, c := deployment(t)
	kv, err := q.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	store := apikey.NewStore(kv)
	var outputs []string // everything printed, to look for hashes in
	run := func(args ...string) (int, string, string) {
		t.Helper()
		code, out, errOut := c.run(args...)
		outputs = append(outputs, out, errOut)
		return code, out, errOut
	}
	// check says whether secret authenticates as key id at the tests' clock.
	check := func(id, secret string) error {
		t.Helper()
		k, _, err := store.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return k.Check(secret, clock)
	}
	// created runs a create or rotate that prints a secret and returns the
	// key ID it names.
	created := func(args ...string) (string, string) {
		t.Helper()
		code, out, errOut := run(args...)
		secret := strings.TrimSuffix(out, "\n")
		id, err := apikey.ParseID(secret)
		if code != exitOK || err != nil || strings.Contains(secret, "\n") || !strings.Contains(errOut, "will not be shown again") {
			t.Fatalf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant the secret alone on stdout, and the notice", strings.Join(args, " "), code, out, errOut)
		}
		return id, secret
	}

	usage := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"keys", "create", "ci"}, "--tenant is required"},
		{[]string{"keys", "create", "--tenant", "acme"}, "want one NAME"},
		{[]string{"keys", "create", "ci", "--tenant", "a.b"}, `tenant "a.b": want 1 to 64 letters`},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--role", "root"}, "--role: want user or admin"},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--models", "llama 3"}, `--models: model "llama 3" is not an Ollama model name`},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--models", "llama3*>"}, `--models: model pattern "llama3*>"`},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--rpm", "-1"}, "must not be negative"},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--expires", "soon"}, `--expires "soon"`},
		{[]string{"keys", "revoke"}, "want one key ID"},
		{[]string{"keys", "rotate", "a", "b"}, "want one key ID"},
		{[]string{"keys", "list", "x"}, "takes no arguments"},
		{[]string{"keys", "create", "ci", "--tenant", "acme", "--lane", "urgent"}, "--lane \"urgent\": want interactive, async or batch"},
	}
	for _, u := range usage {
		if code, _, errOut := run(u.args...); code != exitUsage || !strings.Contains(errOut, u.wantErr) {
			t.Errorf("ollamaq %s = %d, stderr %q; want usage, with %q", strings.Join(u.args, " "), code, errOut, u.wantErr)
		}
	}

	ci, ciSecret := created("keys", "create", "ci", "--tenant", "acme", "--models", "Llama3*, qwen2.5:0.5b,llama3*", "--rpm", "60", "--tpm", "100000", "--expires", "30d")
	if err := check(ci, ciSecret); err != nil {
		t.Errorf("the printed secret does not authenticate: %v", err)
	}
	k, _, _ := store.Get(t.Context(), ci)
	if want := []string{"llama3*", "qwen2.5:0.5b"}; fmt.Sprint(k.Models) != fmt.Sprint(want) || k.Role != apikey.User || k.RPM != 60 ||
		k.TPM != 100000 || !k.Expires.Equal(clock.Add(30*24*time.Hour)) || !k.Allows("llama3.2:1b") || k.Allows("phi3:latest") {
		t.Errorf("stored %+v; want models %q, role user, rpm 60, tpm 100000, expiry in 30 days", k, want)
	}
	code, out, errOut := run("keys", "create", "ops", "--tenant", "acme", "--role", "admin", "--models", "llama3.2", "--lane", "async", "--json")
	var made secretOutput
	if code != exitOK || json.Unmarshal([]byte(out), &made) != nil || made.Key.Role != apikey.Admin || made.Key.State != "active" ||
		fmt.Sprint(made.Key.Models) != "[llama3.2:latest]" || made.Key.Lane != job.Async || !strings.Contains(errOut, "will not be shown again") {
		t.Fatalf("keys create --json = %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	ops := made.Key.ID
	if err := check(ops, made.Secret); err != nil {
		t.Errorf("the secret printed as JSON does not authenticate: %v", err)
	}
	old, _ := created("keys", "create", "old", "--tenant", "globex", "--expires", "1h")

	_, newSecret := created("keys", "rotate", ci)
	if err := check(ci, newSecret); err != nil {
		t.Errorf("the rotated secret does not authenticate: %v", err)
	}
	if err := check(ci, ciSecret); !errors.Is(err, apikey.ErrUnknown) {
		t.Errorf("the secret before rotation: %v, want %v", err, apikey.ErrUnknown)
	}
	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{[]string{"keys", "revoke", ops}, exitOK, "revoked key " + ops + " (ops, tenant acme): dispatchers refuse it from now on", ""},
		{[]string{"keys", "revoke", ops}, exitOK, "was revoked already, at 2026-01-02T03:04:05Z", ""},
		{[]string{"keys", "rotate", ops}, exitFailed, "", "key " + ops + " is revoked; create a new one"},
		{[]string{"keys", "revoke", "nosuchkey123"}, exitFailed, "", "no such key: nosuchkey123 (see 'ollamaq keys list')"},
		{[]string{"keys", "rotate", "a.b"}, exitFailed, "", `no such key: "a.b"`},
	}
	for _, s := range steps {
		code, out, errOut := run(s.args...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) || !strings.Contains(errOut, s.wantErr) {
			t.Errorf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
				strings.Join(s.args, " "), code, out, errOut, s.wantCode, s.wantOut, s.wantErr)
		}
	}
	if err := check(ops, made.Secret); !errors.Is(err, apikey.ErrRevoked) {
		t.Errorf("the revoked key's secret: %v, want %v", err, apikey.ErrRevoked)
	}

	// Two hours on, old has expired.
	c.now = func() time.Time { return clock.Add(2 * time.Hour) }
	ids := strings.NewReplacer(ci, "key-ci------", ops, "key-ops-----", old, "key-old-----")
	for _, tt := range []struct{ golden, flag string }{{"keys_list.txt", ""}, {"keys_list.json", "--json"}} {
		t.Run(tt.golden, func(t *testing.T) {
			args := []string{"keys", "list"}
			if tt.flag != "" {
				args = append(args, tt.flag)
			}
			code, out, errOut := run(args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, ids.Replace(out))
		})
	}
	keys, err := store.List(t.Context())
	if err != nil || len(keys) != 3 {
		t.Fatalf("List = %d keys, %v", len(keys), err)
	}
	for _, k := range keys {
		for _, o := range outputs {
			if strings.Contains(o, k.Hash) {
				t.Errorf("the hash of key %s was printed:\n%s", k.ID, o)
			}
		}
	}

	// Each change wrote its audit record, in order; the repeated revoke did not.
	s, err := q.JetStream().Stream(t.Context(), job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		msg, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var r audit.Record
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			t.Fatal(err)
		}
		if msg.Subject != "ollamaq.audit.admin.-.ollamaq" || r.Kind != job.AuditAdmin || r.Requester != "ollamaq" || r.Outcome != audit.Done {
			t.Errorf("record %d on %s: %+v", seq, msg.Subject, r)
		}
		got = append(got, r.Action+" "+ids.Replace(r.Key)+" "+r.Tenant)
	}
	want := []string{"keys.create key-ci------ acme", "keys.create key-ops----- acme", "keys.create key-old----- globex",
		"keys.rotate key-ci------ acme", "keys.revoke key-ops----- acme"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestKeysWithoutBucket: a deployment whose key bucket is missing says what
// to do, as a connection problem.
func TestKeysWithoutBucket(t *testing.T) {
	q, c := deployment(t)
	if err := q.JetStream().DeleteKeyValue(t.Context(), job.KeyBucket); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"keys", "list"}, {"keys", "create", "ci", "--tenant", "acme"}, {"keys", "revoke", "k1"}} {
		if code, out, errOut := c.run(args...); code != exitConnect || out != "" || errOut != "ollamaq: "+noKeyBucket+"\n" {
			t.Errorf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d and %q", strings.Join(args, " "), code, out, errOut, exitConnect, noKeyBucket)
		}
	}
}

func TestParseModels(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: " , ", want: nil},
		{in: "Llama3.2", want: []string{"llama3.2:latest"}},
		{in: "registry.ollama.ai/library/qwen2.5:0.5B", want: []string{"qwen2.5:0.5b"}},
		{in: "LLAMA3*, qwen*,llama3*", want: []string{"llama3*", "qwen*"}},
		{in: "hf.co/org/*:q4_k_m", want: []string{"hf.co/org/*:q4_k_m"}},
		{in: "*", want: []string{"*"}},
		{in: "llama 3", wantErr: "is not an Ollama model name"},
		{in: "llama3.2:", wantErr: "is not an Ollama model name"},
		{in: "llama3*>", wantErr: "model pattern"},
		{in: "llama3* x", wantErr: "model pattern"},
		{in: strings.Repeat("a", 300) + "*", wantErr: "model pattern"},
	}
	for _, tt := range tests {
		got, err := parseModels(tt.in)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parseModels(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestKeysUnderAuth runs the key, usage and audit commands with NATS auth
// on: an admin may, and its records name it; the server refuses a client
// what keys list needs.
func TestKeysUnderAuth(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Auth: true})
	c := newCLI(t, f.Broker.ClientURL())
	c.now = time.Now
	admin := f.CredsPath(fleettest.AdminUser)

	code, out, errOut := c.run("--creds", admin, "keys", "create", "ci", "--tenant", "acme")
	id, err := apikey.ParseID(strings.TrimSpace(out))
	if code != exitOK || err != nil {
		t.Fatalf("keys create as admin = %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, args := range [][]string{{"keys", "list"}, {"keys", "rotate", id}, {"keys", "revoke", id}, {"usage"}, {"audit"}} {
		if code, out, errOut := c.run(append([]string{"--creds", admin}, args...)...); code != exitOK {
			t.Errorf("ollamaq %s as admin = %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	_, out, _ = c.run("--creds", admin, "audit", "--kind", "admin", "--json")
	var actions []string
	for line := range strings.Lines(out) {
		var r auditRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Requester != fleettest.AdminUser || r.Key != id || r.Tenant != "acme" {
			t.Errorf("admin record %+v; want requester %s, key %s, tenant acme", r.Record, fleettest.AdminUser, id)
		}
		actions = append(actions, r.Action)
	}
	if got := strings.Join(actions, " "); got != "keys.create keys.rotate keys.revoke" {
		t.Errorf("admin records %q, want keys.create keys.rotate keys.revoke", got)
	}

	// A tenant's client credentials may bind the job stream, but not read
	// the key bucket: the server refuses, and ollamaq says so in one line.
	f.ClientConn("tenant1") // issues the credentials
	tenant := f.CredsPath("tenant1")
	for _, args := range [][]string{{"keys", "list"}, {"keys", "create", "x", "--tenant", "tenant1"}, {"usage"}} {
		code, out, errOut := c.run(append([]string{"--creds", tenant, "--timeout", "1s"}, args...)...)
		if code != exitConnect || out != "" || strings.Count(errOut, "\n") != 1 ||
			!strings.Contains(errOut, "does not permit these credentials what ollamaq needs (nats: permissions violation") {
			t.Errorf("ollamaq %s as a client = %d\nstdout: %s\nstderr: %s\nwant %d and the permission violation", strings.Join(args, " "), code, out, errOut, exitConnect)
		}
	}
	if code, _, errOut := c.run("--creds", tenant, "--timeout", "1s", "keys", "list"); !strings.Contains(errOut, `Publish to "$JS.API.STREAM.INFO.KV_ollamaq_keys"`) {
		t.Errorf("keys list as a client = %d, %s; want the STREAM.INFO of the key bucket refused", code, errOut)
	}
}
