package auth_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestInit checks what auth init leaves: an operator naming its system
// account, the OLLAMAMAX account with JetStream and one scoped key per role,
// the dispatcher and sys users, and no file or directory others can read.
func TestInit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth")
	d, err := auth.Init(path)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	if _, err := auth.Init(path); !errors.Is(err, auth.ErrExists) {
		t.Errorf("second Init: %v, want ErrExists", err)
	}
	err = filepath.WalkDir(path, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if e.IsDir() {
			want = 0o700
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	trust, err := auth.LoadTrust(path)
	if err != nil {
		t.Fatalf("LoadTrust: %v", err)
	}
	var names []string
	for _, a := range trust.Accounts {
		names = append(names, a.Name)
		if a.Name != auth.AccountName {
			continue
		}
		ac, err := jwt.DecodeAccountClaims(a.JWT)
		if err != nil {
			t.Fatal(err)
		}
		if !ac.Limits.JetStreamLimits.IsUnlimited() {
			t.Errorf("JetStream limits %+v, want unlimited", ac.Limits.JetStreamLimits)
		}
	}
	if want := []string{auth.AccountName, auth.SystemAccountName}; !slices.Equal(names, want) {
		t.Errorf("accounts %v, want %v", names, want)
	}
	var roles []string
	for _, r := range trust.Roles {
		roles = append(roles, r.Role)
	}
	if want := []string{"admin", "client", "dispatcher", "worker"}; !slices.Equal(roles, want) {
		t.Errorf("scoped signing keys for %v, want %v", roles, want)
	}

	users, err := d.Users()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range users {
		got = append(got, u.Name+":"+string(u.Role)+":"+u.Account)
	}
	if want := []string{"dispatcher:dispatcher:OLLAMAMAX", "sys:sys:SYS"}; !slices.Equal(got, want) {
		t.Errorf("users %v, want %v", got, want)
	}
	if _, err := auth.Open(path); err != nil {
		t.Errorf("Open: %v", err)
	}
	if _, err := auth.Open(t.TempDir()); !errors.Is(err, auth.ErrNotDir) {
		t.Errorf("Open of an empty directory: %v, want ErrNotDir", err)
	}
}

// TestAddUser checks the users AddUser issues and the ones it refuses.
func TestAddUser(t *testing.T) {
	d, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		user    string
		opts    auth.UserOptions
		wantErr error
		// wantTags are the JWT's tags, which the client template fills in.
		wantTags []string
	}{
		{name: "client", user: "alice", opts: auth.UserOptions{Role: auth.Client},
			wantTags: []string{"role:client", "class:*", "model:*"}},
		{name: "batch-only client", user: "carol", opts: auth.UserOptions{Role: auth.Client, BatchOnly: true},
			wantTags: []string{"role:client", "class:batch", "model:*"}},
		{name: "client for two models", user: "dave", opts: auth.UserOptions{Role: auth.Client, Models: []string{"Llama3.2", "qwen2.5:0.5b", "llama3.2:latest"}},
			wantTags: []string{"role:client", "class:*", "model:" + job.EncodeModel("llama3.2:latest"), "model:" + job.EncodeModel("qwen2.5:0.5b")}},
		{name: "worker", user: "gpu-7_a", opts: auth.UserOptions{Role: auth.Worker, Expires: 30 * 24 * time.Hour}, wantTags: []string{"role:worker"}},
		{name: "admin", user: "ops", opts: auth.UserOptions{Role: auth.Admin}, wantTags: []string{"role:admin"}},
		{name: "name taken", user: "dispatcher", opts: auth.UserOptions{Role: auth.Dispatcher}, wantErr: auth.ErrExists},
		{name: "name with a dot", user: "a.b", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "wildcard name", user: "*", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "name with a space", user: "a b", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "reserved batch", user: "batch", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "sys as a client", user: "sys", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "empty name", user: "", opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "too long", user: strings.Repeat("a", 65), opts: auth.UserOptions{Role: auth.Client}, wantErr: auth.ErrInvalidName},
		{name: "unknown role", user: "x", opts: auth.UserOptions{Role: "root"}, wantErr: auth.ErrInvalidRole},
		{name: "model pattern", user: "x", opts: auth.UserOptions{Role: auth.Client, Models: []string{"llama3*"}}, wantErr: auth.ErrInvalidOption},
		{name: "bad model", user: "x", opts: auth.UserOptions{Role: auth.Client, Models: []string{"a b"}}, wantErr: auth.ErrInvalidOption},
		{name: "batch-only worker", user: "x", opts: auth.UserOptions{Role: auth.Worker, BatchOnly: true}, wantErr: auth.ErrInvalidOption},
		{name: "negative expiry", user: "x", opts: auth.UserOptions{Role: auth.Worker, Expires: -time.Hour}, wantErr: auth.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.user+".creds")
			tt.opts.CredsFile = path
			u, creds, err := d.AddUser(tt.user, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("AddUser(%q) = %v, want %v", tt.user, err, tt.wantErr)
			}
			if err != nil {
				if _, serr := os.Stat(path); serr == nil {
					t.Errorf("a refused user's credentials were written")
				}
				return
			}
			file, err := os.ReadFile(path)
			if err != nil || string(file) != string(creds) {
				t.Fatalf("credentials file: %v; it must hold what AddUser returned", err)
			}
			if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
				t.Errorf("credentials file mode %o, want 600", info.Mode().Perm())
			}
			token, err := jwt.ParseDecoratedJWT(creds)
			if err != nil {
				t.Fatal(err)
			}
			uc, err := jwt.DecodeUserClaims(token)
			if err != nil {
				t.Fatal(err)
			}
			// The scoped-signer rule: no permissions or limits of its own,
			// and the account named.
			if !uc.HasEmptyPermissions() || uc.IssuerAccount == "" || uc.Name != tt.user {
				t.Errorf("user JWT: empty permissions %v, issuer account %q, name %q; want empty, set, %q",
					uc.HasEmptyPermissions(), uc.IssuerAccount, uc.Name, tt.user)
			}
			if got := []string(uc.Tags); !slices.Equal(got, tt.wantTags) {
				t.Errorf("tags %v, want %v", got, tt.wantTags)
			}
			if (tt.opts.Expires > 0) != (u.ExpiresAt != nil) || (u.ExpiresAt != nil && u.ExpiresAt.Unix() != uc.Expires) {
				t.Errorf("expires at %v (JWT %d), want in %s", u.ExpiresAt, uc.Expires, tt.opts.Expires)
			}
			c, err := auth.ReadCreds(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != tt.user || c.Role != tt.opts.Role || c.InboxPrefix() != "_INBOX_"+tt.user {
				t.Errorf("ReadCreds = %+v, want name %s, role %s, inbox _INBOX_%s", c, tt.user, tt.opts.Role, tt.user)
			}
			kp, err := jwt.ParseDecoratedUserNKey(creds)
			if err != nil {
				t.Fatal(err)
			}
			seed, _ := kp.Seed()
			if strings.Contains(string(mustRead(t, filepath.Join(d.Path(), "users", tt.user+".json"))), string(seed)) {
				t.Error("the user record holds the seed")
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRevoke checks that a revoked user lists as revoked, that revoking
// again changes nothing, and that its name can then be issued anew.
func TestRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth")
	d, err := auth.Init(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.AddUser("alice", auth.UserOptions{Role: auth.Client}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Revoke("nobody"); !errors.Is(err, auth.ErrNoUser) {
		t.Errorf("Revoke(nobody) = %v, want ErrNoUser", err)
	}
	u, first, err := d.Revoke("alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Status(time.Now()); got != "revoked" {
		t.Errorf("status after Revoke = %s, want revoked", got)
	}
	_, again, err := d.Revoke("alice")
	if err != nil || again != first {
		t.Errorf("second Revoke: %v, same account JWT %v; want nil, true", err, again == first)
	}
	// The revocation is in the account JWT on disk, for the next open.
	d, err = auth.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if u, err = d.User("alice"); err != nil || u.RevokedAt == nil {
		t.Fatalf("after reopening: %+v, %v; want revoked", u, err)
	}
	nu, _, err := d.AddUser("alice", auth.UserOptions{Role: auth.Client})
	if err != nil {
		t.Fatalf("AddUser after Revoke: %v", err)
	}
	if nu.PublicKey == u.PublicKey || nu.Status(time.Now()) != "active" {
		t.Errorf("reissued alice: key reused %v, status %s; want a new key, active", nu.PublicKey == u.PublicKey, nu.Status(time.Now()))
	}
}

// TestStatus covers a user's status in time.
func TestStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	tests := []struct {
		name string
		u    auth.User
		want string
	}{
		{"no expiry", auth.User{}, "active"},
		{"expires later", auth.User{ExpiresAt: &future}, "active"},
		{"expired", auth.User{ExpiresAt: &past}, "expired"},
		{"expires now", auth.User{ExpiresAt: &now}, "expired"},
		{"revoked", auth.User{RevokedAt: &past, ExpiresAt: &past}, "revoked"},
	}
	for _, tt := range tests {
		if got := tt.u.Status(now); got != tt.want {
			t.Errorf("%s: Status = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestExportedConfig starts a plain nats-server from the block ServerConfig
// exports, as an existing cluster would, and checks that it accepts the
// directory's users with the role's permissions and refuses others.
func TestExportedConfig(t *testing.T) {
	d, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "alice.creds")
	if _, _, err := d.AddUser("alice", auth.UserOptions{Role: auth.Client, CredsFile: creds}); err != nil {
		t.Fatal(err)
	}
	trust, err := auth.LoadTrust(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats-server.conf")
	body := "listen: 127.0.0.1:-1\njetstream { store_dir: " + quote(t.TempDir()) + " }\n" + trust.ServerConfig(filepath.Join(t.TempDir(), "jwt"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server cannot read the exported block: %v\n%s", err, body)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	if nc, err := nats.Connect(s.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("connect without credentials: %v, want %v", err, nats.ErrAuthorization)
	}
	c, err := auth.ReadCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), append(c.Options(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))...)
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	defer nc.Close()
	// Allowed by her role, and answered: the account has JetStream.
	m, err := nc.Request("$JS.API.STREAM.INFO."+job.Stream, nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "stream not found") {
		t.Errorf("stream info as alice: %v; want JetStream's answer that there is no such stream", err)
	}
	// Refused by her role: the template applies.
	if err := nc.Publish("ollamaq.reply.bob.j1", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(nc.LastError(), nats.ErrPermissionViolation) {
		t.Errorf("alice publishes a reply to bob: last error %v, want a permission violation", nc.LastError())
	}
}

func quote(s string) string { return `"` + s + `"` }
