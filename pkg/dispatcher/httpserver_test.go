package dispatcher_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

// startRun runs a dispatcher on cfg until the test ends (Run must then
// return nil) and returns its error channel.
func startRun(t *testing.T, cfg dispatcher.Config) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dispatcher.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return done
}

// rawConn is an HTTP/1.1 connection the test drives by hand.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

// dial connects to addr, retrying for a while: Run listens soon after it
// starts, not at once.
func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
			return &rawConn{Conn: c, r: bufio.NewReader(c)}
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // Polling, with the deadline above.
	}
}

// get sends GET path, keeping the connection alive, and returns the
// response with its body read, failing the test after wait.
func (c *rawConn) get(t *testing.T, path string, wait time.Duration) (*http.Response, string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return c.response(t)
}

func (c *rawConn) response(t *testing.T) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, string(body)
}

// waitEOF reads c until the server closes it, failing the test if it sends
// anything or is still open after wait; it returns how long that took.
func (c *rawConn) waitEOF(t *testing.T, wait time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	if err := c.SetReadDeadline(began.Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, err := c.r.Read(make([]byte, 1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open after %s", wait)
	case n > 0 || !errors.Is(err, io.EOF):
		t.Fatalf("read %d bytes, %v; want the server to close the connection (EOF)", n, err)
	}
	return time.Since(began)
}

// recordLog keeps the log records of a dispatcher for the test to read.
type recordLog struct {
	mu      *sync.Mutex
	records *[]slog.Record
}

func newRecordLog() recordLog { return recordLog{mu: new(sync.Mutex), records: new([]slog.Record)} }

func (h recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h recordLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordLog) WithGroup(string) slog.Handler            { return h }
func (h recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = append(*h.records, r.Clone())
	return nil
}

// count returns how many records have the message msg.
func (h recordLog) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range *h.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}

// attr returns the value of key in the first record with the message msg.
func (h recordLog) attr(msg, key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range *h.records {
		if r.Message != msg {
			continue
		}
		v := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.String()
			}
			return v == ""
		})
		return v
	}
	return ""
}

// TestConnectionCap opens ten times more idle keep-alive connections than
// MaxConns allows: those past the cap get a 503 that says why, the embedded
// NATS server still accepts clients, the refusals are logged at most once a
// second, and the API serves again once the idle connections are closed.
func TestConnectionCap(t *testing.T) {
	const maxConns, opened = 20, 200
	cfg := runConfig(t)
	cfg.MaxConns = maxConns
	logs := newRecordLog()
	cfg.Logger = slog.New(logs)
	startRun(t, cfg)
	began := time.Now()

	// The first connection waits for the API to serve: it is one of those
	// the cap counts, and nothing else connects.
	conns := []*rawConn{dial(t, cfg.HTTPAddr)}
	if resp, body := conns[0].get(t, "/api/tags", 30*time.Second); resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/tags: %s %s", resp.Status, body)
	}
	served, refused := 1, 0
	wantBody := `{"error":"too many open connections: the dispatcher's limit is 20 (--max-conns)"}`
	for range opened - 1 {
		c := dial(t, cfg.HTTPAddr)
		resp, body := c.get(t, "/healthz", 10*time.Second)
		switch resp.StatusCode {
		case http.StatusOK:
			served++
			conns = append(conns, c) // Kept open, idle.
			continue
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("GET /healthz: %s %q, want 200 or 503", resp.Status, body)
		}
		if body != wantBody || resp.Header.Get("Retry-After") != "1" || !resp.Close ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("refusal: %s %v %q, want 503 with Retry-After: 1, Connection: close, JSON %s", resp.Status, resp.Header, body, wantBody)
		}
		_ = c.Close()
	}
	if served != maxConns || refused != opened-maxConns {
		t.Errorf("%d connections served and %d refused, want %d and %d", served, refused, maxConns, opened-maxConns)
	}

	nc, err := nats.Connect("nats://"+cfg.Embedded.Listen, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("NATS client while the HTTP connections are all taken: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("NATS flush: %v", err)
	}
	nc.Close()

	if n, most := logs.count("refusing HTTP connections: too many open (--max-conns)"), int(time.Since(began)/time.Second)+1; n < 1 || n > most {
		t.Errorf("%d refusal warnings in %s, want at least 1 and at most one a second (%d)", n, time.Since(began), most)
	}

	for _, c := range conns {
		_ = c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial(t, cfg.HTTPAddr)
		resp, body := c.get(t, "/api/tags", 10*time.Second)
		_ = c.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/tags 10s after the idle connections closed: %s %s", resp.Status, body)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above: the server closes its ends in its own time.
	}
}

// TestIdleTimeout keeps a connection idle after one request: the server
// closes it once IdleTimeout has passed, and not before.
func TestIdleTimeout(t *testing.T) {
	cfg := runConfig(t)
	cfg.IdleTimeout = 300 * time.Millisecond
	startRun(t, cfg)
	c := dial(t, cfg.HTTPAddr)
	resp, body := c.get(t, "/api/tags", 30*time.Second) // Also waits for the API to serve.
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("/api/tags: %s, close %v, %s; want 200 on a kept-alive connection", resp.Status, resp.Close, body)
	}
	if took := c.waitEOF(t, 10*time.Second); took < cfg.IdleTimeout/2 {
		t.Errorf("closed %s after the answer, want about the idle timeout, %s", took, cfg.IdleTimeout)
	}
}

// TestSlowBody sends the headers of a request and part of its body, then
// stalls: once BodyTimeout has passed the request ends with an answer that
// names the limit and the connection is closed, while another client is
// served meanwhile.
func TestSlowBody(t *testing.T) {
	cfg := runConfig(t)
	cfg.BodyTimeout = 500 * time.Millisecond
	done := startRun(t, cfg)
	waitServing(t, cfg.HTTPAddr, done)

	slow := dial(t, cfg.HTTPAddr)
	began := time.Now()
	if _, err := io.WriteString(slow, "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"+
		"Content-Length: 1000\r\n\r\n"+`{"model":"`); err != nil {
		t.Fatal(err)
	}
	other := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := other.Get("http://" + cfg.HTTPAddr + "/api/tags")
	if err != nil {
		t.Fatalf("another client while a body stalls: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("another client while a body stalls: %s", resp.Status)
	}

	if err := slow.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, body := slow.response(t)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "within 500ms (--body-timeout)") || !resp.Close {
		t.Errorf("stalled body: %s, close %v, %s; want 400 naming --body-timeout, and the connection closed", resp.Status, resp.Close, body)
	}
	slow.waitEOF(t, 5*time.Second)
	if took := time.Since(began); took < cfg.BodyTimeout/2 {
		t.Errorf("stalled body refused after %s, want about the body timeout, %s", took, cfg.BodyTimeout)
	}
}

// slowFleet starts a fleet of one worker whose simulated Ollama streams 20
// tokens a second, 24 to an answer, and returns a dispatcher config (Run)
// that uses the fleet's NATS server.
func slowFleet(t *testing.T) dispatcher.Config {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = 20, time.Millisecond
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim})
	cfg := runConfig(t)
	cfg.NATSURL = f.Broker.ClientURL()
	return cfg
}

// streamGenerate streams a generation from base through c, sending each
// piece on pieces, and returns the final chunk.
func streamGenerate(ctx context.Context, c *http.Client, base string, pieces chan<- string) (api.GenerateResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/generate",
		strings.NewReader(`{"model":"llama3.2","prompt":"Why is the sky blue?"}`))
	if err != nil {
		return api.GenerateResponse{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return api.GenerateResponse{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body) // For the message only.
		return api.GenerateResponse{}, errors.New(resp.Status + " " + string(b))
	}
	var last api.GenerateResponse
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		last = api.GenerateResponse{}
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			return last, err
		}
		if pieces != nil {
			pieces <- last.Response
		}
	}
	return last, sc.Err()
}

// TestStreamOutlivesTimeouts streams an answer that takes far longer than
// BodyTimeout and IdleTimeout: the read bounds must not cut it off.
func TestStreamOutlivesTimeouts(t *testing.T) {
	cfg := slowFleet(t)
	cfg.BodyTimeout, cfg.IdleTimeout = 200*time.Millisecond, 200*time.Millisecond
	done := startRun(t, cfg)
	waitServing(t, cfg.HTTPAddr, done)
	began := time.Now()
	last, err := streamGenerate(t.Context(), &http.Client{}, "http://"+cfg.HTTPAddr, nil)
	took := time.Since(began)
	if err != nil || !last.Done || last.EvalCount != 24 {
		t.Fatalf("stream: done %v, %d tokens, %v; want all 24 tokens", last.Done, last.EvalCount, err)
	}
	if took < 4*cfg.BodyTimeout {
		t.Errorf("the stream took %s, want one that outlasts the timeouts (%s) several times", took, cfg.BodyTimeout)
	}
}

// getWithOrigin fetches url with origin (if set) as the Origin header, and returns
// the response with its body read.
func getWithOrigin(t *testing.T, url, origin string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(body)
}

// TestMetricsWithoutCORS sends an allowed Origin to /metrics on the API
// listener: the metrics come without Access-Control-Allow-Origin, which
// the same origin gets on any other route.
func TestMetricsWithoutCORS(t *testing.T) {
	cfg := runConfig(t)
	done := startRun(t, cfg)
	waitServing(t, cfg.HTTPAddr, done)
	const origin = "http://localhost:3000" // One of Ollama's default origins.
	base := "http://" + cfg.HTTPAddr
	resp, body := getWithOrigin(t, base+"/metrics", origin)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "ollamamax_http_connections_max") {
		t.Fatalf("/metrics: %s, want 200 with the dispatcher's metrics", resp.Status)
	}
	for name := range resp.Header {
		if strings.HasPrefix(name, "Access-Control-") {
			t.Errorf("/metrics with Origin %s has %s: %q, want no CORS headers", origin, name, resp.Header.Get(name))
		}
	}
	if resp, _ := getWithOrigin(t, base+"/api/version", origin); resp.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Errorf("/api/version with Origin %s: Access-Control-Allow-Origin %q, want the origin", origin, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestMetricsListen serves /metrics on its own address: there it answers,
// on the API listener it is not found, and Run releases both addresses.
func TestMetricsListen(t *testing.T) {
	cfg := runConfig(t)
	cfg.MetricsAddr = natstest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dispatcher.Run(ctx, cfg) }()
	waitServing(t, cfg.HTTPAddr, done)

	resp, body := getWithOrigin(t, "http://"+cfg.MetricsAddr+"/metrics", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "ollamamax_http_connections_open") {
		t.Errorf("GET %s/metrics: %s, want 200 with the dispatcher's metrics", cfg.MetricsAddr, resp.Status)
	}
	if resp, _ := getWithOrigin(t, "http://"+cfg.HTTPAddr+"/metrics", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the API listener: %s, want 404", resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertReleased(t, cfg, "", true)
	if ln, err := net.Listen("tcp", cfg.MetricsAddr); err != nil {
		t.Errorf("metrics address %s still taken after Run returned: %v", cfg.MetricsAddr, err)
	} else {
		_ = ln.Close()
	}
}
