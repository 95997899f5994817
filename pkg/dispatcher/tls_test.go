package dispatcher_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

// waitServing polls the dispatcher's API until it answers, failing the test
// if Run returns first or 30 seconds pass.
func waitServing(t *testing.T, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/api/tags")
		if err == nil {
			_ = resp.Body.Close()
			return
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
}

// TestRunWithTLS runs a dispatcher whose embedded server requires TLS and
// client certificates: its own in-process connection works (the API
// serves), a client that trusts the CA gets in, one that does not is
// refused; after the files are replaced and a reload is asked for, a new
// connection sees the new certificate while one made before stays up.
func TestRunWithTLS(t *testing.T) {
	ca := testcert.NewCA(t, "fleet")
	dir := t.TempDir()
	first, client := ca.Server(dir), ca.Client(dir)
	cfg := runConfig(t)
	cfg.Embedded.TLS = broker.TLSConfig{Cert: first.Cert, Key: first.Key, CA: ca.File}
	reload := make(chan struct{})
	cfg.Reload = reload
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dispatcher.Run(ctx, cfg) }()
	waitServing(t, cfg.HTTPAddr, done)

	url := "nats://" + cfg.Embedded.Listen
	trusted := []nats.Option{nats.RootCAs(ca.File), nats.ClientCert(client.Cert, client.Key), nats.Timeout(5 * time.Second)}
	serial := func(nc *nats.Conn) string {
		t.Helper()
		st, err := nc.TLSConnectionState()
		if err != nil || len(st.PeerCertificates) == 0 {
			t.Fatalf("TLS state: %v", err)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	old, err := nats.Connect(url, trusted...)
	if err != nil {
		t.Fatalf("connect trusting the CA: %v", err)
	}
	defer old.Close()
	if got, want := serial(old), first.Serial.String(); got != want {
		t.Errorf("serial %s, want %s", got, want)
	}
	if nc, err := nats.Connect(url, nats.ClientCert(client.Cert, client.Key), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client that does not trust the CA connected")
	}

	second := ca.Server(dir)
	reload <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := nats.Connect(url, trusted...)
		if err != nil {
			t.Fatalf("connect after the reload: %v", err)
		}
		got := serial(nc)
		nc.Close()
		if got == second.Serial.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see serial %s 10s after the reload, want %s", got, second.Serial)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
	js, err := jetstream.New(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(t.Context(), "OLLAMAQ_JOBS"); err != nil || !old.IsConnected() || old.Reconnects != 0 {
		t.Errorf("the connection made before the reload: stream info err %v, connected %v, reconnects %d",
			err, old.IsConnected(), old.Reconnects)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
