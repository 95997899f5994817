package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// assertFree fails the test unless addr can be listened on.
func assertFree(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("%s is still taken after the failed start: %v", addr, err)
		return
	}
	_ = ln.Close()
}

func start(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// TestStartFails starts a server where it cannot run: it must fail at once,
// say why, and leave nothing listening and the store directory free.
func TestStartFails(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the config to start with; it may occupy what it names.
		setup func(t *testing.T) broker.Config
		check func(t *testing.T, cfg broker.Config, err error)
	}{
		{
			name: "client address in use",
			setup: func(t *testing.T) broker.Config {
				cfg := broker.DefaultConfig(t.TempDir())
				cfg.Listen = natstest.Occupied(t)
				return cfg
			},
			check: func(t *testing.T, cfg broker.Config, err error) {
				if !errors.Is(err, broker.ErrListen) || !errors.Is(err, syscall.EADDRINUSE) {
					t.Errorf("err = %v, want ErrListen wrapping EADDRINUSE", err)
				}
			},
		},
		{
			name: "store directory in use",
			setup: func(t *testing.T) broker.Config {
				cfg := broker.DefaultConfig(t.TempDir())
				cfg.Listen = "127.0.0.1:-1"
				start(t, cfg)
				cfg.Listen = natstest.FreeAddr(t)
				return cfg
			},
			check: func(t *testing.T, cfg broker.Config, err error) {
				var inUse *broker.StoreDirInUseError
				if !errors.As(err, &inUse) {
					t.Fatalf("err = %v, want a *StoreDirInUseError", err)
				}
				if inUse.Dir != cfg.StoreDir || inUse.PID != os.Getpid() {
					t.Errorf("got dir %s pid %d, want %s pid %d", inUse.Dir, inUse.PID, cfg.StoreDir, os.Getpid())
				}
				assertFree(t, cfg.Listen)
			},
		},
		{
			name: "JetStream cannot start",
			setup: func(t *testing.T) broker.Config {
				cfg := broker.DefaultConfig(t.TempDir())
				cfg.Listen = natstest.FreeAddr(t)
				// nats-server keeps its files in StoreDir/jetstream: make that a file.
				if err := os.WriteFile(filepath.Join(cfg.StoreDir, "jetstream"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return cfg
			},
			check: func(t *testing.T, cfg broker.Config, err error) {
				if errors.Is(err, broker.ErrListen) || !strings.Contains(err.Error(), "start nats-server (store directory "+cfg.StoreDir+"): ") {
					t.Errorf("err = %v, want JetStream's failure", err)
				}
				assertFree(t, cfg.Listen)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.setup(t)
			began := time.Now()
			b, err := broker.Start(cfg)
			if err == nil {
				b.Shutdown()
				t.Fatal("Start succeeded, want an error")
			}
			if d := time.Since(began); d > time.Second {
				t.Errorf("Start took %s to fail, want under 1s", d)
			}
			tt.check(t, cfg, err)
		})
	}
}

// TestStoreDirReleased checks that a failed start and a shut-down server
// leave the store directory to the next server.
func TestStoreDirReleased(t *testing.T) {
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = natstest.Occupied(t)
	if b, err := broker.Start(cfg); err == nil {
		b.Shutdown()
		t.Fatal("Start on an occupied address succeeded")
	}
	cfg.Listen = "127.0.0.1:-1"
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("Start after a failed start: %v", err)
	}
	b.Shutdown()
	b.Shutdown() // Idempotent.
	start(t, cfg)
}

// TestStart checks that a started server serves clients on its address and
// in-process, with and without a listener.
func TestStart(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		wantURL bool
	}{
		{"listener", "127.0.0.1:-1", true},
		{"in-process only", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := broker.DefaultConfig(t.TempDir())
			cfg.Listen = tt.listen
			b := start(t, cfg)
			if got := b.ClientURL() != ""; got != tt.wantURL {
				t.Errorf("ClientURL() = %q, want a URL: %v", b.ClientURL(), tt.wantURL)
			}
			nc, err := b.Connect()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
				t.Errorf("JetStream info: %v", err)
			}
		})
	}
}

// records keeps the level of every log record.
type records struct {
	mu  sync.Mutex
	got map[slog.Level]int
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[rec.Level]++
	return nil
}

// count returns how many records have each level.
func (r *records) count() map[slog.Level]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[slog.Level]int{}
	for l, n := range r.got {
		out[l] = n
	}
	return out
}

// TestBannerIsDebug starts and stops the server: its start-up banner (about
// 25 lines) and its shutdown notices are debug, so a terminal at the info
// level sees none of them; the dispatcher logs the one line that matters
// (address and store directory).
func TestBannerIsDebug(t *testing.T) {
	log := &records{got: map[slog.Level]int{}}
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	cfg.Logger = slog.New(log)
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	started := log.count()
	b.Shutdown()
	stopped := log.count()
	for _, tt := range []struct {
		when string
		got  map[slog.Level]int
	}{{"start", started}, {"start and shutdown", stopped}} {
		if tt.got[slog.LevelInfo] != 0 {
			t.Errorf("after %s: %d info lines from nats-server, want 0", tt.when, tt.got[slog.LevelInfo])
		}
	}
	if started[slog.LevelDebug] < 10 {
		t.Errorf("start logged %d debug lines; want the banner (about 25) at debug", started[slog.LevelDebug])
	}
}

// TestOperatorMode starts a server on an auth directory: it must refuse
// connections without credentials, give the dispatcher's credentials
// JetStream in-process, and refuse to start on a directory that is not one.
func TestOperatorMode(t *testing.T) {
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen, cfg.AuthDir = "127.0.0.1:-1", dir.Path()
	b := start(t, cfg)

	if nc, err := nats.Connect(b.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("connect without credentials: %v, want %v", err, nats.ErrAuthorization)
	}
	if nc, err := b.Connect(); err == nil {
		nc.Close()
		t.Error("an in-process connection without credentials was accepted")
	}
	creds, err := auth.ReadCreds(dir.CredsPath(auth.DispatcherUser))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := b.Connect(creds.Options()...)
	if err != nil {
		t.Fatalf("connect in-process as the dispatcher: %v", err)
	}
	defer nc.Close()
	m, err := nc.Request("$JS.API.STREAM.INFO.OLLAMAQ_JOBS", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "stream not found") {
		t.Errorf("JetStream as the dispatcher: %v; want JetStream's answer that there is no such stream", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StoreDir, "resolver")); err != nil {
		t.Errorf("the account resolver's directory: %v", err)
	}

	bad := broker.DefaultConfig(t.TempDir())
	bad.Listen, bad.AuthDir = natstest.FreeAddr(t), t.TempDir()
	if b, err := broker.Start(bad); !errors.Is(err, auth.ErrNotDir) {
		if err == nil {
			b.Shutdown()
		}
		t.Errorf("Start on a directory without an operator: %v, want auth.ErrNotDir", err)
	}
	assertFree(t, bad.Listen)
	bad.AuthDir = ""
	start(t, bad) // The store directory was released.
}

// TestOperatorModeUpgradesTemplates starts a server on an auth directory
// made by an older version, whose worker template lacks the permissions of
// newer subjects: the server must start with this version's templates, so
// a worker on its old credentials may use them.
func TestOperatorModeUpgradesTemplates(t *testing.T) {
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dir.AddUser("gpu1", auth.UserOptions{Role: auth.Worker, CredsFile: dir.CredsPath("gpu1")}); err != nil {
		t.Fatal(err)
	}
	newer := "$JS.API.STREAM.INFO." + job.AuditStream
	ageTemplates(t, dir.Path(), newer)

	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen, cfg.AuthDir = "127.0.0.1:-1", dir.Path()
	b := start(t, cfg)
	creds, err := auth.ReadCreds(dir.CredsPath("gpu1"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := b.Connect(creds.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request(newer, nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "stream not found") {
		t.Errorf("%s as a worker with credentials from an older directory: %v; want JetStream's answer", newer, err)
	}
	want, err := auth.Template(auth.Worker)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := auth.LoadTrust(dir.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range trust.Roles {
		if r.Role == string(auth.Worker) && !slices.Equal(r.Template.Pub.Allow, want.Pub.Allow) {
			t.Errorf("the directory's worker template was not upgraded: %v", r.Template.Pub.Allow)
		}
	}
}

// ageTemplates rewrites the OLLAMAMAX account of the auth directory path as
// an older version made it: its worker template without the subject drop.
func ageTemplates(t *testing.T, path, drop string) {
	t.Helper()
	file := filepath.Join(path, "accounts", auth.AccountName+".jwt")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := jwt.DecodeAccountClaims(string(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range claims.SigningKeys.Keys() {
		scope, _ := claims.SigningKeys.GetScope(k)
		if us, ok := scope.(*jwt.UserScope); ok && us.Role == string(auth.Worker) {
			us.Template.Pub.Allow = slices.DeleteFunc(us.Template.Pub.Allow, func(s string) bool { return s == drop })
			claims.SigningKeys.AddScopedSigner(us)
		}
	}
	seed, err := os.ReadFile(filepath.Join(path, "operator.nk"))
	if err != nil {
		t.Fatal(err)
	}
	op, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatal(err)
	}
	s, err := claims.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
