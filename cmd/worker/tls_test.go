package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestNATSTLS runs the worker against an embedded server that requires TLS
// and client certificates: with --nats-ca, --nats-cert and --nats-key it
// joins (its health endpoint answers, which it serves only once connected);
// without the CA, or without a certificate, it exits with status 1 and says why.
func TestNATSTLS(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca := testcert.NewCA(t, "fleet")
	dir := t.TempDir()
	srv, client := ca.Server(dir), ca.Client(dir)
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	cfg.TLS = broker.TLSConfig{Cert: srv.Cert, Key: srv.Key, CA: ca.File}
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	nc, err := b.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		args    []string
		env     []string
		wantErr string // "" for a worker that joins
	}{
		{"CA and client certificate", []string{"--nats-ca", ca.File, "--nats-cert", client.Cert, "--nats-key", client.Key}, nil, ""},
		{"from the environment", nil, []string{"NATS_CA=" + ca.File, "NATS_CERT=" + client.Cert, "NATS_KEY=" + client.Key}, ""},
		{"without the CA", []string{"--nats-cert", client.Cert, "--nats-key", client.Key}, nil, "x509"},
		// TLS 1.3 refuses the missing certificate after the client's side of
		// the handshake: the client sees "certificate required" or a closed
		// connection, whichever comes first.
		{"without a client certificate", []string{"--nats-ca", ca.File}, nil, "tls"},
		{"half a client certificate", []string{"--nats-ca", ca.File, "--nats-cert", client.Cert}, nil, "needs both --nats-cert and --nats-key"},
		{"missing CA file", []string{"--nats-ca", "/nonexistent.pem"}, nil, "cannot read --nats-ca /nonexistent.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			listen := ln.Addr().String()
			_ = ln.Close()
			args := append([]string{"--nats-url", b.ClientURL(), "--ollama", "http://127.0.0.1:1", "--listen", listen}, tt.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "NATS_CA=", "NATS_CERT=", "NATS_KEY=", "NATS_CREDS=", "OLLAMAMAX_LOG_LEVEL=info", "OLLAMAMAX_LOG_FORMAT=json")
			cmd.Env = append(cmd.Env, tt.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cancel()
				<-exited
			}()
			if tt.wantErr != "" {
				err := <-exited
				exited <- err
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out.String(), tt.wantErr) {
					t.Errorf("exit %v, output %q; want status 1 and %q", err, out.String(), tt.wantErr)
				}
				return
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				resp, err := http.Get("http://" + listen + "/healthz")
				if err == nil {
					_ = resp.Body.Close()
					return
				}
				select {
				case err := <-exited:
					exited <- err
					t.Fatalf("worker exited: %v\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("worker did not serve /healthz within 20s:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
			}
		})
	}
}
