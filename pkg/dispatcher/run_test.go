package dispatcher_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

// runConfig is a dispatcher with an embedded server on free loopback
// addresses and a fresh store.
func runConfig(t *testing.T) dispatcher.Config {
	t.Helper()
	cfg := dispatcher.DefaultConfig(filepath.Join(t.TempDir(), "js"))
	cfg.HTTPAddr, cfg.Embedded.Listen = natstest.FreeAddr(t), natstest.FreeAddr(t)
	cfg.Logger = fleettest.Logger()
	return cfg
}

// assertReleased fails the test unless the addresses of cfg other than skip
// can be listened on and, with store, another server can run on the store
// directory.
func assertReleased(t *testing.T, cfg dispatcher.Config, skip string, store bool) {
	t.Helper()
	for _, addr := range []string{cfg.HTTPAddr, cfg.Embedded.Listen} {
		if addr == skip {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s is still taken after Run returned: %v", addr, err)
			continue
		}
		_ = ln.Close()
	}
	if !store {
		return
	}
	emb := cfg.Embedded
	emb.Listen = ""
	b, err := broker.Start(emb)
	if err != nil {
		t.Errorf("store directory not released after Run returned: %v", err)
		return
	}
	b.Shutdown()
}

// TestRunFailsWhenTaken runs a dispatcher whose NATS address, HTTP address
// or store directory another server has: Run must return at once with an
// error that says which, and leave nothing listening.
func TestRunFailsWhenTaken(t *testing.T) {
	tests := []struct {
		name string
		// take occupies what the case is about and returns the address it
		// took, if any.
		take  func(t *testing.T, cfg *dispatcher.Config) string
		check func(t *testing.T, err error)
	}{
		{"NATS address", func(t *testing.T, cfg *dispatcher.Config) string {
			cfg.Embedded.Listen = natstest.Occupied(t)
			return cfg.Embedded.Listen
		}, func(t *testing.T, err error) {
			if !errors.Is(err, broker.ErrListen) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("err = %v, want broker.ErrListen wrapping EADDRINUSE", err)
			}
		}},
		{"HTTP address", func(t *testing.T, cfg *dispatcher.Config) string {
			cfg.HTTPAddr = natstest.Occupied(t)
			return cfg.HTTPAddr
		}, func(t *testing.T, err error) {
			if !errors.Is(err, dispatcher.ErrListen) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("err = %v, want dispatcher.ErrListen wrapping EADDRINUSE", err)
			}
		}},
		{"metrics address", func(t *testing.T, cfg *dispatcher.Config) string {
			cfg.MetricsAddr = natstest.Occupied(t)
			return cfg.MetricsAddr
		}, func(t *testing.T, err error) {
			if !errors.Is(err, dispatcher.ErrMetricsListen) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("err = %v, want dispatcher.ErrMetricsListen wrapping EADDRINUSE", err)
			}
		}},
		{"store directory", func(t *testing.T, cfg *dispatcher.Config) string {
			emb := cfg.Embedded
			emb.Listen = ""
			b, err := broker.Start(emb)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Shutdown)
			return ""
		}, func(t *testing.T, err error) {
			var inUse *broker.StoreDirInUseError
			if !errors.As(err, &inUse) {
				t.Errorf("err = %v, want a *broker.StoreDirInUseError", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := runConfig(t)
			taken := tt.take(t, &cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			began := time.Now()
			err := dispatcher.Run(ctx, cfg)
			if d := time.Since(began); d > time.Second {
				t.Errorf("Run took %s to fail, want under 1s", d)
			}
			if err == nil {
				t.Fatal("Run returned nil, want an error")
			}
			tt.check(t, err)
			assertReleased(t, cfg, taken, taken != "") // Without an address taken, the case holds the store directory.
		})
	}
}

// TestRunReleasesOnStop runs a dispatcher until it serves, stops it, and
// checks that it leaves its addresses and store directory free.
func TestRunReleasesOnStop(t *testing.T) {
	cfg := runConfig(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dispatcher.Run(ctx, cfg) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatcher did not answer within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertReleased(t, cfg, "", true)
}

// TestOpenFleet checks that the embedded server opens beyond loopback only
// with an auth directory, or when told it may be insecure.
func TestOpenFleet(t *testing.T) {
	open := "0.0.0.0:4222"
	tests := []struct {
		name    string
		adjust  func(cfg *dispatcher.Config)
		wantErr error
	}{
		{"loopback", func(cfg *dispatcher.Config) {}, nil},
		{"in-process only", func(cfg *dispatcher.Config) { cfg.Embedded.Listen = "" }, nil},
		{"open without auth", func(cfg *dispatcher.Config) { cfg.Embedded.Listen = open }, dispatcher.ErrOpenFleet},
		{"open on all IPv6 addresses", func(cfg *dispatcher.Config) { cfg.Embedded.Listen = "[::]:4222" }, dispatcher.ErrOpenFleet},
		{"open with an auth directory", func(cfg *dispatcher.Config) { cfg.Embedded.Listen, cfg.Embedded.AuthDir = open, "/etc/ollamamax/auth" }, nil},
		{"open, insecure", func(cfg *dispatcher.Config) { cfg.Embedded.Listen, cfg.Insecure = open, true }, nil},
		{"an external server", func(cfg *dispatcher.Config) { cfg.Embedded.Listen, cfg.NATSURL = open, "nats://nats:4222" }, nil},
	}
	for _, tt := range tests {
		cfg := dispatcher.DefaultConfig(t.TempDir())
		tt.adjust(&cfg)
		if err := cfg.Validate(); !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: Validate = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

// TestOpenAPI checks that the HTTP API listens beyond loopback only with API
// keys, or when told it may be insecure.
func TestOpenAPI(t *testing.T) {
	tests := []struct {
		name    string
		adjust  func(cfg *dispatcher.Config)
		wantErr error
	}{
		{"loopback", func(cfg *dispatcher.Config) {}, nil},
		{"localhost", func(cfg *dispatcher.Config) { cfg.HTTPAddr = "localhost:11435" }, nil},
		{"IPv6 loopback", func(cfg *dispatcher.Config) { cfg.HTTPAddr = "[::1]:11435" }, nil},
		{"all addresses without keys", func(cfg *dispatcher.Config) { cfg.HTTPAddr = "0.0.0.0:11435" }, dispatcher.ErrOpenAPI},
		{"no host without keys", func(cfg *dispatcher.Config) { cfg.HTTPAddr = ":11435" }, dispatcher.ErrOpenAPI},
		{"a LAN address without keys", func(cfg *dispatcher.Config) { cfg.HTTPAddr = "192.168.1.5:11435" }, dispatcher.ErrOpenAPI},
		{"open with keys", func(cfg *dispatcher.Config) { cfg.HTTPAddr, cfg.RequireKeys = "0.0.0.0:11435", true }, nil},
		{"open, insecure", func(cfg *dispatcher.Config) { cfg.HTTPAddr, cfg.Insecure = "0.0.0.0:11435", true }, nil},
		{"open with HTTPS but without keys", func(cfg *dispatcher.Config) {
			cfg.HTTPAddr, cfg.TLSCert, cfg.TLSKey = "0.0.0.0:11435", "server.pem", "server-key.pem"
		}, dispatcher.ErrOpenAPI},
	}
	for _, tt := range tests {
		cfg := dispatcher.DefaultConfig(t.TempDir())
		tt.adjust(&cfg)
		if err := cfg.Validate(); !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: Validate = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

// TestValidateHTTPBounds checks that the HTTP bounds refuse negative values
// and take zero for their defaults.
func TestValidateHTTPBounds(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(cfg *dispatcher.Config)
		ok     bool
	}{
		{"defaults", func(cfg *dispatcher.Config) {}, true},
		{"zeros", func(cfg *dispatcher.Config) { cfg.BodyTimeout, cfg.IdleTimeout, cfg.MaxConns = 0, 0, 0 }, true},
		{"negative BodyTimeout", func(cfg *dispatcher.Config) { cfg.BodyTimeout = -time.Second }, false},
		{"negative IdleTimeout", func(cfg *dispatcher.Config) { cfg.IdleTimeout = -time.Second }, false},
		{"negative MaxConns", func(cfg *dispatcher.Config) { cfg.MaxConns = -1 }, false},
	}
	for _, tt := range tests {
		cfg := dispatcher.DefaultConfig(t.TempDir())
		tt.adjust(&cfg)
		if err := cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestRunWithAuthDir runs a dispatcher whose embedded server is in operator
// mode and open beyond loopback: it applies the queue and serves with the
// dispatcher role's permissions, and the server lets nobody in without
// credentials.
func TestRunWithAuthDir(t *testing.T) {
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := auth.ReadCreds(dir.CredsPath(auth.DispatcherUser))
	if err != nil {
		t.Fatal(err)
	}
	cfg := runConfig(t)
	_, port, _ := net.SplitHostPort(cfg.Embedded.Listen)
	cfg.Embedded.Listen, cfg.Embedded.AuthDir = "0.0.0.0:"+port, dir.Path()
	cfg.NATSOptions, cfg.ID = creds.Options(), creds.Name
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dispatcher.Run(ctx, cfg) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/api/tags")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/api/tags: %s", resp.Status)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatcher did not answer within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
	if nc, err := nats.Connect("nats://127.0.0.1:" + port); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("connect without credentials: %v, want %v", err, nats.ErrAuthorization)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
