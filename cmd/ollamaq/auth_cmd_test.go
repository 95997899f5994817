package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestAuthCommands runs the auth commands as an operator would: init, add
// for each role, list, export; then a server on the directory lets those
// credentials in with their roles' permissions, and revoke disconnects one.
func TestAuthCommands(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "auth")
	c := newCLI(t, "nats://127.0.0.1:1")
	c.vars["OLLAMAMAX_AUTH_DIR"] = dir
	c.now = time.Now // Expiry is from now: the listing says how long is left.
	ops := filepath.Join(home, "ops.creds")

	steps := []struct {
		args     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{args: []string{"auth", "init", dir}, wantCode: exitOK, wantOut: "created the auth directory " + dir},
		{args: []string{"auth", "init"}, wantCode: exitFailed, wantErr: "holds an operator already"},
		{args: []string{"auth", "add", "gpu7", "--role", "worker"}, wantCode: exitOK,
			wantOut: filepath.Join(dir, "creds", "gpu7.creds") + "\n", wantErr: "--nats-creds gpu7.creds"},
		{args: []string{"auth", "add", "alice", "--role", "client", "--expires", "30d"}, wantCode: exitOK},
		{args: []string{"auth", "add", "nightly", "--role", "client", "--batch-only", "--models", "llama3.2, qwen2.5:0.5b"}, wantCode: exitOK},
		{args: []string{"auth", "add", "evals", "--role", "client", "--lanes", "async, batch"}, wantCode: exitOK},
		{args: []string{"auth", "add", "ops", "--role", "admin", "--out", ops}, wantCode: exitOK, wantOut: ops + "\n"},
		{args: []string{"auth", "add", "tmp", "--role", "client", "--expires", "2h", "--out", "-"}, wantCode: exitOK,
			wantOut: "-----BEGIN NATS USER JWT-----"},
		{args: []string{"auth", "revoke", "tmp", "--no-push"}, wantCode: exitOK, wantOut: "revoked tmp (client)"},
		{args: []string{"auth", "add", "alice", "--role", "client"}, wantCode: exitFailed, wantErr: "alice has active credentials (revoke them first)"},
		{args: []string{"auth", "add", "x", "--role", "client", "--models", "llama3*"}, wantCode: exitUsage,
			wantErr: `model "llama3*" is a pattern; permissions match whole subject tokens, so list the models instead`},
		{args: []string{"auth", "add", "a.b", "--role", "client"}, wantCode: exitUsage, wantErr: `invalid user name "a.b"`},
		{args: []string{"auth", "add", "x", "--role", "root"}, wantCode: exitUsage, wantErr: "--role: want worker, client, dispatcher or admin"},
		{args: []string{"auth", "add", "x", "--role", "worker", "--batch-only"}, wantCode: exitUsage, wantErr: "batch-only, lanes and models are for clients"},
		{args: []string{"auth", "add", "x", "--role", "client", "--lanes", "async,urgent"}, wantCode: exitUsage, wantErr: `--lanes: "urgent": want interactive, async or batch`},
		{args: []string{"auth", "add", "x", "--role", "worker", "--expires", "soon"}, wantCode: exitUsage, wantErr: `--expires "soon"`},
		{args: []string{"auth", "add", "x"}, wantCode: exitUsage, wantErr: "--role"},
		{args: []string{"auth", "list", "--dir", t.TempDir()}, wantCode: exitFailed, wantErr: "not an auth directory"},
		// A directory this version made needs no upgrade.
		{args: []string{"auth", "upgrade", "--no-push"}, wantCode: exitOK, wantOut: "are up to date"},
		{args: []string{"auth", "upgrade", "extra"}, wantCode: exitUsage, wantErr: "takes no arguments"},
	}
	for _, s := range steps {
		code, out, errOut := c.runIn(t.Context(), "", s.args...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) || !strings.Contains(errOut, s.wantErr) {
			t.Fatalf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
				strings.Join(s.args, " "), code, out, errOut, s.wantCode, s.wantOut, s.wantErr)
		}
	}
	for _, f := range []string{filepath.Join(dir, "creds", "gpu7.creds"), ops} {
		if info, err := os.Stat(f); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 600", f, err)
		}
	}

	// The listings, with what changes from run to run taken out.
	paths := strings.NewReplacer(dir, "DIR", home, "HOME")
	dates := regexp.MustCompile(`\d{4}-\d\d-\d\d(T[0-9:]+Z)?`)
	_, out, _ := c.runIn(t.Context(), "", "auth", "list")
	golden(t, "auth_list.txt", dates.ReplaceAllString(paths.Replace(out), "DATE"))
	_, out, _ = c.runIn(t.Context(), "", "auth", "list", "--json")
	out = regexp.MustCompile(`"public_key": "U[A-Z0-9]+"`).ReplaceAllString(out, `"public_key": "KEY"`)
	golden(t, "auth_list.json", dates.ReplaceAllString(paths.Replace(out), "DATE"))

	code, out, errOut := c.runIn(t.Context(), "", "auth", "export")
	if code != exitOK || !strings.Contains(out, "resolver {\n  type: full\n  dir: \"jwt\"") || !strings.Contains(out, "system_account: A") {
		t.Errorf("auth export = %d\n%s%s", code, out, errOut)
	}
	code, out, _ = c.runIn(t.Context(), "", "auth", "export", "--json")
	var exported auth.Trust
	if err := json.Unmarshal([]byte(out), &exported); code != exitOK || err != nil || len(exported.Accounts) != 2 || len(exported.Roles) != 4 {
		t.Errorf("auth export --json = %d, %v: %d accounts, %d roles; want 2 and 4", code, err, len(exported.Accounts), len(exported.Roles))
	}
	if strings.Contains(out, `"SU`) || strings.Contains(out, `"SA`) || strings.Contains(out, `"SO`) {
		t.Error("auth export --json holds a seed")
	}

	// A server on the directory, with the queue the dispatcher applies.
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen, cfg.AuthDir = "127.0.0.1:-1", dir
	b := natstest.StartWith(t, cfg)
	dc, err := auth.ReadCreds(auth.CredsPath(dir, auth.DispatcherUser))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := b.Connect(dc.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := queue.SetupConn(t.Context(), nc, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	c.server = b.ClientURL()
	alice := filepath.Join(dir, "creds", "alice.creds")
	live := []struct {
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{args: []string{"--creds", ops, "nodes"}, wantCode: exitOK, wantErr: "no workers are reporting"},
		{args: []string{"nodes"}, wantCode: exitConnect, wantErr: "refused the credentials"},
		// A client may bind the queue but not read the fleet's consumers.
		{args: []string{"--creds", alice, "queues"}, wantCode: exitConnect},
		{args: []string{"auth", "revoke", "ops"}, wantCode: exitOK, wantOut: "pushed to " + b.ClientURL() + ": the servers disconnect ops"},
		{args: []string{"--creds", ops, "nodes"}, wantCode: exitConnect, wantErr: "refused the credentials"},
		{args: []string{"auth", "revoke", "alice", "--server", "nats://127.0.0.1:1"}, wantCode: exitConnect,
			wantOut: "revoked alice (client)", wantErr: "cannot reach NATS at nats://127.0.0.1:1 to push the revocation; the revocation is recorded in " + dir},
		{args: []string{"auth", "revoke", "alice"}, wantCode: exitOK, wantOut: "pushed to"},
		{args: []string{"--creds", alice, "queues"}, wantCode: exitConnect, wantErr: "refused the credentials"},
		{args: []string{"auth", "revoke", "nobody"}, wantCode: exitFailed, wantErr: "no such user: nobody"},
	}
	for _, s := range live {
		code, out, errOut := c.run(s.args...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) || !strings.Contains(errOut, s.wantErr) {
			t.Errorf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
				strings.Join(s.args, " "), code, out, errOut, s.wantCode, s.wantOut, s.wantErr)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration // 0: an error
	}{
		{"30d", 30 * 24 * time.Hour},
		{"2w", 14 * 24 * time.Hour},
		{"12h", 12 * time.Hour},
		{"90m", 90 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"0d", 0},
		{"-1d", 0},
		{"d", 0},
		{"1.5d", 0},
		{"-5m", 0},
		{"", 0},
		{"forever", 0},
	}
	for _, tt := range tests {
		got, err := parseExpiry(tt.in)
		if got != tt.want || (err != nil) != (tt.want == 0) {
			t.Errorf("parseExpiry(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}
