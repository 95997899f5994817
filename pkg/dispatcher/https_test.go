package dispatcher_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

// trusting returns a TLS client configuration that trusts ca alone.
func trusting(t *testing.T, ca *testcert.CA) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate in " + ca.File)
	}
	return &tls.Config{RootCAs: pool}
}

// waitHTTPS polls GET url through c until it answers 200, failing the test
// after 30 seconds or if Run returns first.
func waitHTTPS(t *testing.T, c *http.Client, url string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // Read to the end, so c keeps the connection.
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 from %s within 30s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
}

// TestHTTPSReload serves the API over HTTPS against an external NATS
// server (the reload must not depend on the embedded one): a client that
// trusts the CA gets 200 (over HTTP/2 too, if it asks), one that does not
// is refused. After the files are
// replaced and a reload is asked for, a new connection sees the new
// certificate while an answer streaming since before keeps streaming to its
// end; a reload of broken files keeps the certificate in use.
func TestHTTPSReload(t *testing.T) {
	cfg := slowFleet(t)
	ca := testcert.NewCA(t, "api")
	dir := t.TempDir()
	first := ca.Server(dir)
	cfg.TLSCert, cfg.TLSKey = first.Cert, first.Key
	reload := make(chan struct{})
	cfg.Reload = reload
	logs := newRecordLog()
	cfg.Logger = slog.New(logs)
	done := startRun(t, cfg)

	trusted := trusting(t, ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: trusted}}
	base := "https://" + cfg.HTTPAddr
	waitHTTPS(t, client, base+"/healthz", done)
	if got := logs.attr("dispatcher listening", "http"); got != base {
		t.Errorf("logged http=%q, want %q", got, base)
	}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: trusted, ForceAttemptHTTP2: true}}
	if resp, err := h2.Get(base + "/healthz"); err != nil {
		t.Errorf("a client that asks for HTTP/2: %v", err)
	} else {
		_ = resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Errorf("a client that asks for HTTP/2: %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
		}
	}
	var unknown *tls.CertificateVerificationError
	if resp, err := http.Get(base + "/healthz"); !errors.As(err, &unknown) {
		if err == nil {
			_ = resp.Body.Close()
		}
		t.Errorf("a client that does not trust the CA: %v, want a certificate verification error", err)
	}
	// serial is that of the certificate a new connection sees.
	serial := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", cfg.HTTPAddr, trusted)
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got, want := serial(), first.Serial.String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}

	type result struct {
		last api.GenerateResponse
		err  error
	}
	pieces, streamed := make(chan string, 100), make(chan result, 1)
	go func() {
		last, err := streamGenerate(t.Context(), client, base, pieces)
		streamed <- result{last, err}
	}()
	select {
	case <-pieces:
	case r := <-streamed:
		t.Fatalf("the stream ended before its first piece: %v", r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("no piece of the answer within 30s")
	}

	second := ca.Server(dir)
	reload <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for got := serial(); got != second.Serial.String(); got = serial() {
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see serial %s 10s after the reload, want %s", got, second.Serial)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
	select {
	case <-streamed:
		t.Fatal("the answer ended before the reload took effect: the test needs a longer one")
	default:
	}
	r := <-streamed
	if r.err != nil || !r.last.Done || r.last.EvalCount != 24 {
		t.Errorf("the answer streaming across the reload: done %v, %d tokens, %v; want all 24 tokens", r.last.Done, r.last.EvalCount, r.err)
	}

	if err := os.WriteFile(second.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	failed := "reload refused: the HTTPS certificate does not load; keeping the settings and certificates in use"
	deadline = time.Now().Add(10 * time.Second)
	for logs.count(failed) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged 10s after a reload of a broken key", failed)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
	if got, want := serial(), second.Serial.String(); got != want {
		t.Errorf("after a failed reload: serial %s, want the one in use before, %s", got, want)
	}
}

// TestHTTPSRefusal fills MaxConns on an HTTPS listener: the connection past
// the cap gets its 503 over TLS, as an HTTPS client can read it.
func TestHTTPSRefusal(t *testing.T) {
	ca := testcert.NewCA(t, "api")
	pair := ca.Server(t.TempDir())
	cfg := runConfig(t)
	cfg.TLSCert, cfg.TLSKey, cfg.MaxConns = pair.Cert, pair.Key, 1
	done := startRun(t, cfg)
	base := "https://" + cfg.HTTPAddr
	holder := &http.Client{Transport: &http.Transport{TLSClientConfig: trusting(t, ca)}}
	waitHTTPS(t, holder, base+"/healthz", done) // Its connection stays open, idle: the one allowed.

	other := &http.Client{Transport: &http.Transport{TLSClientConfig: trusting(t, ca)}}
	resp, err := other.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("a second HTTPS connection: %v, want the refusal", err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	want := "too many open connections: the dispatcher's limit is 1 (--max-conns)"
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), want) {
		t.Errorf("a second HTTPS connection: %s %q %v, want 503 saying %q", resp.Status, body, err, want)
	}
}

// TestHTTPSConfig checks that HTTPS needs both files.
func TestHTTPSConfig(t *testing.T) {
	tests := []struct {
		name      string
		cert, key string
		ok        bool
	}{
		{"neither", "", "", true},
		{"both", "server.pem", "server-key.pem", true},
		{"certificate only", "server.pem", "", false},
		{"key only", "", "server-key.pem", false},
	}
	for _, tt := range tests {
		cfg := dispatcher.DefaultConfig(t.TempDir())
		cfg.TLSCert, cfg.TLSKey = tt.cert, tt.key
		err := cfg.Validate()
		if tt.ok != (err == nil) {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "--tls-cert") || !strings.Contains(err.Error(), "--tls-key")) {
			t.Errorf("%s: %q does not name both --tls-cert and --tls-key", tt.name, err)
		}
	}
}
