package broker_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/broker"
)

// peerSerial returns the serial of the certificate the server showed nc.
func peerSerial(t *testing.T, nc *nats.Conn) string {
	t.Helper()
	st, err := nc.TLSConnectionState()
	if err != nil {
		t.Fatalf("TLS state: %v", err)
	}
	if len(st.PeerCertificates) == 0 {
		t.Fatal("the server showed no certificate")
	}
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestTLS starts a server with a certificate that requires client
// certificates: only a client that trusts its CA and shows a certificate of
// the client CA gets in; the in-process connection needs neither.
func TestTLS(t *testing.T) {
	ca, other := testcert.NewCA(t, "fleet"), testcert.NewCA(t, "elsewhere")
	dir := t.TempDir()
	srv, client, stranger := ca.Server(dir), ca.Client(dir), other.Client(t.TempDir())
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	cfg.TLS = broker.TLSConfig{Cert: srv.Cert, Key: srv.Key, CA: ca.File}
	b := start(t, cfg)

	tests := []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"trusts the CA, client certificate", []nats.Option{nats.RootCAs(ca.File), nats.ClientCert(client.Cert, client.Key)}, true},
		{"no client certificate", []nats.Option{nats.RootCAs(ca.File)}, false},
		{"client certificate of another CA", []nats.Option{nats.RootCAs(ca.File), nats.ClientCert(stranger.Cert, stranger.Key)}, false},
		{"does not trust the CA", []nats.Option{nats.ClientCert(client.Cert, client.Key)}, false},
		{"trusts another CA", []nats.Option{nats.RootCAs(other.File), nats.ClientCert(client.Cert, client.Key)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(b.ClientURL(), append(tt.opts, nats.Timeout(5*time.Second))...)
			if nc != nil {
				defer nc.Close()
			}
			if got := err == nil; got != tt.ok {
				t.Fatalf("connect: err %v; want success %v", err, tt.ok)
			}
			if tt.ok {
				if got, want := peerSerial(t, nc), srv.Serial.String(); got != want {
					t.Errorf("server certificate serial %s, want %s", got, want)
				}
			}
		})
	}
	if nc, err := nats.Connect(b.ClientURL(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a plain-text client was let in")
	}
	nc, err := b.Connect()
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	nc.Close()
}

// TestReloadTLS replaces the certificate files and reloads: a new
// connection sees the new certificate, while a connection made before it and
// a stream stay as they were.
func TestReloadTLS(t *testing.T) {
	ca := testcert.NewCA(t, "fleet")
	dir := t.TempDir()
	first := ca.Server(dir)
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	cfg.TLS = broker.TLSConfig{Cert: first.Cert, Key: first.Key}
	b := start(t, cfg)
	connect := func() *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(b.ClientURL(), nats.RootCAs(ca.File), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	old := connect()
	if got, want := peerSerial(t, old), first.Serial.String(); got != want {
		t.Fatalf("serial before the reload %s, want %s", got, want)
	}
	js, err := jetstream.New(old)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "keep.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	reconnects := old.Reconnects

	second := ca.Server(dir) // Replaces the files.
	if err := b.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if got, want := peerSerial(t, connect()), second.Serial.String(); got != want {
		t.Errorf("serial of a new connection after the reload %s, want %s", got, want)
	}
	if _, err := js.Publish(ctx, "keep.2", []byte("x")); err != nil {
		t.Errorf("publish on the connection made before the reload: %v", err)
	}
	if got, want := old.Reconnects, reconnects; got != want || !old.IsConnected() {
		t.Errorf("the old connection reconnected %d times (want %d), connected %v", got, want, old.IsConnected())
	}
	if got, want := peerSerial(t, old), first.Serial.String(); got != want {
		t.Errorf("the old connection's serial %s, want %s: it was not kept", got, want)
	}
	s, err := js.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.CachedInfo().State.Msgs, uint64(2); got != want {
		t.Errorf("stream messages %d, want %d", got, want)
	}

	// A broken file is refused and the server keeps its certificate.
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadTLS(); err == nil {
		t.Error("ReloadTLS of a broken certificate: no error")
	}
	if got, want := peerSerial(t, connect()), second.Serial.String(); got != want {
		t.Errorf("serial after a failed reload %s, want %s", got, want)
	}
}

func TestReloadTLSWithoutTLS(t *testing.T) {
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	if err := start(t, cfg).ReloadTLS(); !errors.Is(err, broker.ErrNoTLS) {
		t.Errorf("ReloadTLS: %v, want ErrNoTLS", err)
	}
	cfg.TLS = broker.TLSConfig{Cert: "cert.pem"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate of a certificate without a key: no error")
	}
}
