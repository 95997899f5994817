package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrListen is wrapped by Run when it cannot listen on Config.Listen. The
// error also wraps the cause, so errors.Is(err, syscall.EADDRINUSE) tells that
// another process has the address.
var ErrListen = errors.New("worker: cannot listen for metrics and health")

// Run is a worker process: it connects to NATS, applies the queue
// definitions, serves /metrics, /healthz and /readyz on cfg.Listen, and
// serves jobs until ctx is done, then drains (see Worker.Run). Listening
// comes first, so a taken address fails before anything else starts.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With("worker", cfg.ID)
	var ln net.Listener
	if cfg.Listen != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("%w on %s: %w", ErrListen, cfg.Listen, err)
		}
		defer func() { _ = ln.Close() }() // Serve closes it too; the second close is harmless.
	}
	opts := append([]nats.Option{
		nats.Name("ollamamax-worker-" + cfg.ID), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}, cfg.NATSOptions...)
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is the dispatcher or nats-server running?)", cfg.NATSURL, err)
	}
	defer nc.Close()
	q, err := queue.SetupConn(ctx, nc, cfg.Queue)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = reg
	w, err := New(nc, q, cfg)
	if err != nil {
		return err
	}
	var reloads sync.WaitGroup
	defer reloads.Wait()
	rctx, stopReloads := context.WithCancel(ctx)
	defer stopReloads()
	if err := startReloads(rctx, &reloads, q, w, cfg, log); err != nil {
		return err
	}
	var wg sync.WaitGroup
	if ln != nil {
		srv := &http.Server{Handler: w.opsHandler(reg), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		})
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // Only probes and scrapes are cut short.
			wg.Wait()
		}()
		log.Info("serving metrics and health", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	err = w.Run(ctx)
	if derr := nc.Drain(); derr != nil {
		log.Warn("drain nats connection", "err", derr)
	}
	return err
}

// opsHandler serves /metrics, /healthz and /readyz for operators and probes.
func (w *Worker) opsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "ok\n") })
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if err := w.Ready(); err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ready\n")
	})
	return mux
}
