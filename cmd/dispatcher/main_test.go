package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
)

// build compiles the dispatcher into a temporary directory of t.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dispatcher")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// environ is the test's environment without what would change the
// dispatcher's NATS or its logging.
func environ() []string {
	return append(os.Environ(), "NATS_URL=", "NATS_CREDS=", "OLLAMAMAX_AUTH_DIR=", "OLLAMAMAX_INSECURE=", "OLLAMAMAX_ID=",
		"OLLAMAMAX_KEYS=", "OLLAMAMAX_TLS_CERT=", "OLLAMAMAX_TLS_KEY=", "OLLAMAMAX_METRICS_LISTEN=",
		"OLLAMAMAX_LOG_LEVEL=info", "OLLAMAMAX_LOG_FORMAT=json")
}

// startDispatcher runs a dispatcher on storeDir until the test ends, and
// returns it once it answers HTTP.
func startDispatcher(t *testing.T, bin, storeDir string) *exec.Cmd {
	t.Helper()
	httpAddr := natstest.FreeAddr(t)
	cmd := exec.Command(bin, "--listen", httpAddr, "--nats-listen", natstest.FreeAddr(t), "--store-dir", storeDir)
	cmd.Env = environ()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // Its only state is in storeDir, a temporary directory.
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("first dispatcher exited: %v", err)
		default:
		}
		if resp, err := http.Get("http://" + httpAddr + "/"); err == nil {
			_ = resp.Body.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatal("first dispatcher did not answer within 30s")
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
}

// TestTakenFailsLoudly starts the dispatcher where another process already
// has its NATS address, its HTTP address or its store directory: it must exit
// with status 1 within a second, with one line that says what is taken and
// which flag and variable change it, and leave its other addresses free.
func TestTakenFailsLoudly(t *testing.T) {
	bin := build(t)
	type setup struct {
		nats, http, store string   // what the dispatcher is given as flags
		taken             string   // the address the case occupies
		env               []string // extra environment
	}
	tests := []struct {
		name string
		// prepare takes what the case is about, and returns the line the
		// dispatcher must print.
		prepare func(t *testing.T, s *setup) string
	}{
		{"NATS address in use", func(t *testing.T, s *setup) string {
			s.nats = natstest.Occupied(t)
			s.taken = s.nats
			return fmt.Sprintf("dispatcher: cannot listen for NATS clients on %s: address already in use; choose another address with --nats-listen or OLLAMAMAX_NATS_LISTEN", s.nats)
		}},
		{"NATS address in use, from OLLAMAMAX_NATS_LISTEN", func(t *testing.T, s *setup) string {
			addr := natstest.Occupied(t)
			s.env = append(s.env, "OLLAMAMAX_NATS_LISTEN="+addr)
			s.nats = "" // Not given as a flag.
			return fmt.Sprintf("dispatcher: cannot listen for NATS clients on %s: address already in use; choose another address with --nats-listen or OLLAMAMAX_NATS_LISTEN", addr)
		}},
		{"HTTP address in use", func(t *testing.T, s *setup) string {
			s.http = natstest.Occupied(t)
			s.taken = s.http
			return fmt.Sprintf("dispatcher: cannot listen for the Ollama API on %s: address already in use; choose another address with --listen or OLLAMAMAX_LISTEN", s.http)
		}},
		{"HTTP address in use, from OLLAMAMAX_LISTEN", func(t *testing.T, s *setup) string {
			addr := natstest.Occupied(t)
			s.env = append(s.env, "OLLAMAMAX_LISTEN="+addr)
			s.http = ""
			return fmt.Sprintf("dispatcher: cannot listen for the Ollama API on %s: address already in use; choose another address with --listen or OLLAMAMAX_LISTEN", addr)
		}},
		{"metrics address in use, from OLLAMAMAX_METRICS_LISTEN", func(t *testing.T, s *setup) string {
			addr := natstest.Occupied(t)
			s.env = append(s.env, "OLLAMAMAX_METRICS_LISTEN="+addr)
			return fmt.Sprintf("dispatcher: cannot listen for metrics on %s: address already in use; choose another address with --metrics-listen or OLLAMAMAX_METRICS_LISTEN", addr)
		}},
		{"store directory in use by another dispatcher", func(t *testing.T, s *setup) string {
			first := startDispatcher(t, bin, s.store)
			return fmt.Sprintf("dispatcher: store directory %s is in use by another server (pid %d); choose another with --store-dir or OLLAMAMAX_STORE_DIR", s.store, first.Process.Pid)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &setup{nats: natstest.FreeAddr(t), http: natstest.FreeAddr(t), store: filepath.Join(t.TempDir(), "js")}
			want := tt.prepare(t, s)
			args := []string{"--store-dir", s.store}
			if s.nats != "" {
				args = append(args, "--nats-listen", s.nats)
			}
			if s.http != "" {
				args = append(args, "--listen", s.http)
			}
			// A dispatcher that does not fail would run until killed here.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(environ(), s.env...)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			began := time.Now()
			err := cmd.Run()
			elapsed := time.Since(began)

			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("exit: %v, want status 1", err)
			}
			if got := stderr.String(); got != want+"\n" {
				t.Errorf("output:\n%s\nwant the one line:\n%s", got, want)
			}
			if elapsed > time.Second {
				t.Errorf("took %s to fail, want under 1s", elapsed)
			}
			for _, addr := range []string{s.nats, s.http} {
				if addr == "" || addr == s.taken {
					continue
				}
				if ln, err := net.Listen("tcp", addr); err != nil {
					t.Errorf("%s still taken after the dispatcher exited: %v", addr, err)
				} else {
					_ = ln.Close()
				}
			}
		})
	}
}

// TestOpenFleetRefused starts the dispatcher with its NATS open to other
// machines but no auth directory: it must refuse at once, in one line that
// says why and what to pass instead.
func TestOpenFleetRefused(t *testing.T) {
	bin := build(t)
	_, port, _ := net.SplitHostPort(natstest.FreeAddr(t))
	listen := "0.0.0.0:" + port
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--nats-listen", listen, "--listen", natstest.FreeAddr(t), "--store-dir", filepath.Join(t.TempDir(), "js"))
	cmd.Env = environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	want := "dispatcher: refusing to open the embedded NATS on " + listen + " without authentication: anyone who reaches it could read every prompt and answer and delete the queue; " +
		"create an auth directory with 'ollamaq auth init DIR' and pass --auth-dir DIR (OLLAMAMAX_AUTH_DIR), or pass --insecure (OLLAMAMAX_INSECURE) on a network you trust\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant the one line:\n%s", got, want)
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("took %s to refuse, want under 1s", d)
	}
}

// TestOpenAPIRefused starts the dispatcher with its API open to other
// machines but without API keys: it must refuse at once, in one line that
// says why and what to pass instead.
func TestOpenAPIRefused(t *testing.T) {
	bin := build(t)
	listen := "0.0.0.0:" + natstest.FreePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--listen", listen, "--nats-listen", natstest.FreeAddr(t), "--store-dir", filepath.Join(t.TempDir(), "js"))
	cmd.Env = environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	want := "dispatcher: refusing to serve the API on " + listen + " without API keys: anyone who reaches it could use every model and delete models from every worker; " +
		"create keys with 'ollamaq keys create' and pass --keys (OLLAMAMAX_KEYS), or pass --insecure (OLLAMAMAX_INSECURE) on a network you trust\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant the one line:\n%s", got, want)
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("took %s to refuse, want under 1s", d)
	}
}
