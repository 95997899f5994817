package dispatcher

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Bounds of the HTTP servers Run starts.
const (
	headerTimeout      = 10 * time.Second
	defaultBodyTimeout = 60 * time.Second
	defaultIdleTimeout = 2 * time.Minute
)

// newHTTPServer returns a server for h that bounds reading: the headers of
// a request within ten seconds, the whole request within body (a client
// that sends its body slower gets an error, and the connection is closed),
// and the wait for the next request on a keep-alive connection within idle.
// Writing is not bounded (no WriteTimeout): a streamed answer can run for
// minutes. ReadTimeout does not cut it off either: net/http lifts the read
// deadline once the body has been read to its end. What net/http itself
// reports (failed TLS handshakes, accept errors, handler panics) goes to
// log as warnings, not to the standard logger.
func newHTTPServer(h http.Handler, body, idle time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{Handler: nameBodyTimeout(h, body), ReadHeaderTimeout: headerTimeout, ReadTimeout: body, IdleTimeout: idle,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// nameBodyTimeout makes a request body that broke the read deadline say so,
// with the flag that sets it, instead of "i/o timeout".
func nameBodyTimeout(next http.Handler, limit time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r = r.WithContext(r.Context()) // A copy: the server keeps judging its own body.
			r.Body = &timedBody{ReadCloser: r.Body, limit: limit}
		}
		next.ServeHTTP(w, r)
	})
}

type timedBody struct {
	io.ReadCloser
	limit time.Duration
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("the request did not arrive in full within %s (--body-timeout): %w", b.limit, err)
	}
	return n, err
}

// metricsHandler serves g on GET /metrics alone, for Config.MetricsAddr.
func metricsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
