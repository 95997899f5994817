package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/broker"
)

// TestSIGHUPReloadsTLS runs the dispatcher with a TLS certificate for its
// embedded NATS server and one for its HTTPS API, replaces the files and
// sends one SIGHUP: new connections to both get the new certificates, the
// process and a NATS connection made before keep running.
func TestSIGHUPReloadsTLS(t *testing.T) {
	bin := build(t)
	ca := testcert.NewCA(t, "fleet")
	natsDir, httpDir := t.TempDir(), t.TempDir()
	first, firstHTTP := ca.Server(natsDir), ca.Server(httpDir)
	httpAddr, natsAddr := natstest.FreeAddr(t), natstest.FreeAddr(t)
	cmd := exec.Command(bin, "--listen", httpAddr, "--nats-listen", natsAddr, "--store-dir", filepath.Join(t.TempDir(), "js"),
		"--nats-tls-cert", first.Cert, "--tls-cert", firstHTTP.Cert)
	// The keys from the environment.
	cmd.Env = append(environ(), "OLLAMAMAX_NATS_TLS_KEY="+first.Key, "OLLAMAMAX_TLS_KEY="+firstHTTP.Key)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	poll := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			select {
			case err := <-exited:
				t.Fatalf("dispatcher exited while waiting for %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30s", what)
			}
			time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
		}
	}
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	trusted := &tls.Config{RootCAs: roots}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: trusted}}
	poll("HTTPS answer", func() bool {
		resp, err := https.Get("https://" + httpAddr + "/")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err == nil
	})
	url := "nats://" + natsAddr
	serial := func(nc *nats.Conn) string {
		t.Helper()
		st, err := nc.TLSConnectionState()
		if err != nil || len(st.PeerCertificates) == 0 {
			t.Fatalf("TLS state: %v", err)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	httpSerial := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", httpAddr, trusted)
		if err != nil {
			t.Fatalf("TLS dial of the API: %v", err)
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	old, err := nats.Connect(url, nats.RootCAs(ca.File))
	if err != nil {
		t.Fatalf("connect trusting the CA: %v", err)
	}
	defer old.Close()
	if got, want := serial(old), first.Serial.String(); got != want {
		t.Fatalf("NATS serial %s, want %s", got, want)
	}
	if got, want := httpSerial(), firstHTTP.Serial.String(); got != want {
		t.Fatalf("HTTPS serial %s, want %s", got, want)
	}
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("a client that does not trust the CA connected")
	}

	second, secondHTTP := ca.Server(natsDir), ca.Server(httpDir)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll("new NATS certificate", func() bool {
		nc, err := nats.Connect(url, nats.RootCAs(ca.File))
		if err != nil {
			t.Fatalf("connect after SIGHUP: %v", err)
		}
		defer nc.Close()
		return serial(nc) == second.Serial.String()
	})
	poll("new HTTPS certificate", func() bool { return httpSerial() == secondHTTP.Serial.String() })
	if err := old.Flush(); err != nil || old.Reconnects != 0 {
		t.Errorf("connection made before SIGHUP: flush %v, reconnects %d", err, old.Reconnects)
	}
}

// TestNATSURLWithTLS runs the dispatcher against a NATS server (--nats-url)
// that requires TLS and client certificates: with --nats-ca, --nats-cert
// and --nats-key it serves; without the CA it exits with status 1.
func TestNATSURLWithTLS(t *testing.T) {
	bin := build(t)
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

	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"CA and client certificate", []string{"--nats-ca", ca.File, "--nats-cert", client.Cert, "--nats-key", client.Key}, true},
		{"without the CA", []string{"--nats-cert", client.Cert, "--nats-key", client.Key}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			httpAddr := natstest.FreeAddr(t)
			cmd := exec.CommandContext(ctx, bin, append([]string{"--listen", httpAddr, "--nats-url", b.ClientURL()}, tt.args...)...)
			cmd.Env = environ()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cancel()
				<-exited
			}()
			if !tt.ok {
				err := <-exited
				exited <- err
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Errorf("exit %v, want status 1", err)
				}
				return
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				resp, err := http.Get("http://" + httpAddr + "/api/tags")
				if err == nil {
					_ = resp.Body.Close()
					return
				}
				select {
				case err := <-exited:
					exited <- err
					t.Fatalf("dispatcher exited: %v", err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatal("dispatcher did not answer within 20s")
				}
				time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
			}
		})
	}
}
