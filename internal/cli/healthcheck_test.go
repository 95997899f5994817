package cli

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// probed is a server answering /readyz and /healthz as code says, and
// /hang never; it returns the server and its port.
func probed(t *testing.T, tls bool, code int) (*httptest.Server, string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if code != http.StatusOK {
			http.Error(w, "queue unreachable: nats: no servers available", code)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /hang", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	s := httptest.NewUnstartedServer(mux)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // The plain request to the TLS server is a case.
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	_, port, err := net.SplitHostPort(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return s, port
}

func TestHealthcheck(t *testing.T) {
	_, plain := probed(t, false, http.StatusOK)
	_, busy := probed(t, false, http.StatusServiceUnavailable)
	_, secure := probed(t, true, http.StatusOK)
	closed := func() string { // A port nobody listens on any more.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		_ = l.Close()
		return port
	}()
	tests := []struct {
		name    string
		addr    string
		path    string
		tls     bool
		want    string // the answer, when healthy
		wantErr string // part of the error, when not
	}{
		{name: "ready", addr: "127.0.0.1:" + plain, path: "/readyz", want: "ready"},
		{name: "live", addr: "127.0.0.1:" + plain, path: "/healthz", want: "ok"},
		{name: "unspecified IPv4 host probed on loopback", addr: "0.0.0.0:" + plain, path: "/readyz", want: "ready"},
		{name: "no host probed on loopback", addr: ":" + plain, path: "/readyz", want: "ready"},
		{name: "not ready: the status and the reason", addr: "127.0.0.1:" + busy, path: "/readyz",
			wantErr: "GET http://127.0.0.1:" + busy + "/readyz: 503 Service Unavailable: queue unreachable: nats: no servers available"},
		{name: "nobody listens", addr: "127.0.0.1:" + closed, path: "/readyz",
			wantErr: "GET http://127.0.0.1:" + closed + "/readyz: dial tcp 127.0.0.1:" + closed + ": connect: connection refused"},
		{name: "HTTPS, certificate not checked", addr: "0.0.0.0:" + secure, path: "/readyz", tls: true, want: "ready"},
		{name: "HTTP to an HTTPS server", addr: "127.0.0.1:" + secure, path: "/readyz", wantErr: "400 Bad Request"},
		{name: "HTTPS to an HTTP server", addr: "127.0.0.1:" + plain, path: "/readyz", tls: true, wantErr: "GET https://127.0.0.1:" + plain + "/readyz: "},
		{name: "not a listen address", addr: "127.0.0.1", path: "/readyz", wantErr: `listen address "127.0.0.1": `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Healthcheck(t.Context(), tt.addr, tt.path, tt.tls)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v, want %q", err, tt.want)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("answer %q, want an error with %q", got, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
			case got != tt.want:
				t.Fatalf("answer %q, want %q", got, tt.want)
			}
		})
	}
}

// TestHealthcheckBounded: a server that accepts but never answers fails the
// check when the context ends, not never.
func TestHealthcheckBounded(t *testing.T) {
	_, port := probed(t, false, http.StatusOK)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Healthcheck(ctx, "127.0.0.1:"+port, "/hang", false)
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("error %v, want the deadline", err)
	}
	if took := time.Since(start); took > HealthTimeout {
		t.Fatalf("took %v, more than HealthTimeout", took)
	}
}
