package main

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestConnectionTLS runs ollamaq against the embedded server with TLS and
// client certificates: --tlsca with --tlscert/--tlskey gets in, a client
// that does not trust the CA or shows no certificate is refused.
func TestConnectionTLS(t *testing.T) {
	ca, other := testcert.NewCA(t, "fleet"), testcert.NewCA(t, "elsewhere")
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
	url := b.ClientURL()
	cert := []string{"--tlscert", client.Cert, "--tlskey", client.Key}
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"trusts the CA, client certificate", append([]string{"--tlsca", ca.File}, cert...), exitOK},
		{"no client certificate", []string{"--tlsca", ca.File}, exitConnect},
		{"does not trust the CA", cert, exitConnect},
		{"trusts another CA", append([]string{"--tlsca", other.File}, cert...), exitConnect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, "")
			args := append(append([]string{"--server", url}, tt.args...), "nodes")
			code, _, errOut := c.runIn(t.Context(), "", args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, stderr %q; want %d", code, errOut, tt.wantCode)
			}
			if code == exitConnect && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("a connection failure took more than one line:\n%s", errOut)
			}
		})
	}
}
