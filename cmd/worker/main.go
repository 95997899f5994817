// Command worker serves OllamaMax jobs with the Ollama beside it: it pulls jobs
// for the models that Ollama has, only as many as it has free slots.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/envconfig"
	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const synopsis = `Usage: worker [flags]

Runs beside one Ollama. It finds the models that Ollama has, pulls queued jobs
for them only as far as it has free slots, streams Ollama's answers back to the
requester, and reports its health and inventory to the node bucket. If Ollama
stops answering, the worker stops pulling and resumes by itself when it answers.

Examples:
  worker                                          # Ollama at $OLLAMA_HOST, NATS at 127.0.0.1:4222
  worker --nats-url nats://gateway:4222 --ollama http://127.0.0.1:11434 --slots 4

Flags (each also read from the environment variable in brackets):
`

func main() {
	cli.Exit("worker", run())
}

func run() error {
	hostname, _ := os.Hostname() // An empty hostname just makes the default ID shorter.
	cfg := worker.DefaultConfig("", nil)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.Usage = cli.Usage(fs.Output(), synopsis, fs.PrintDefaults)
	natsURL := fs.String("nats-url", cli.Env("NATS_URL", nats.DefaultURL), "NATS server or cluster [NATS_URL]")
	creds := fs.String("nats-creds", cli.Env("NATS_CREDS", ""), "NATS credentials file [NATS_CREDS]")
	ollamaURL := fs.String("ollama", envconfig.Host().String(), "Ollama base URL (default from OLLAMA_HOST, as Ollama reads it) [OLLAMA_HOST]")
	fs.IntVar(&cfg.Slots, "slots", cli.EnvInt("OLLAMA_NUM_PARALLEL", 1), "jobs run at once [OLLAMA_NUM_PARALLEL]")
	id := fs.String("id", cli.Env("OLLAMAMAX_WORKER_ID", ""), "worker ID in the node bucket (default: hostname and Ollama port) [OLLAMAMAX_WORKER_ID]")
	fs.Func("label", "a key=value label for choosing workers, e.g. gpu=a100 (repeatable) [OLLAMAMAX_WORKER_LABELS, comma-separated]", func(v string) error {
		return addLabel(&cfg, v)
	})
	for _, l := range strings.Split(cli.Env("OLLAMAMAX_WORKER_LABELS", ""), ",") {
		if l != "" {
			if err := addLabel(&cfg, l); err != nil {
				return fmt.Errorf("OLLAMAMAX_WORKER_LABELS: %w", err)
			}
		}
	}
	listen := fs.String("listen", cli.Env("OLLAMAMAX_WORKER_LISTEN", "127.0.0.1:9464"), "address for /metrics, /healthz and /readyz; empty for none [OLLAMAMAX_WORKER_LISTEN]")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "how often to refresh the inventory and node record")
	fs.DurationVar(&cfg.Grace, "grace", cli.EnvDuration("OLLAMAMAX_GRACE", cfg.Grace), "on SIGTERM, how long in-flight jobs may finish before they are handed back [OLLAMAMAX_GRACE]")
	var qopts queue.Options
	fs.DurationVar(&qopts.AckWait, "ack-wait", cli.EnvDuration("OLLAMAMAX_ACK_WAIT", 0), "redeliver a job whose worker is silent this long; set the same on all processes (default from streams/consumer.json: 10s) [OLLAMAMAX_ACK_WAIT]")
	newLogger := cli.LogFlags(fs)
	if help, err := cli.Parse(fs, os.Args[1:]); help || err != nil {
		return err
	}
	log, err := newLogger()
	if err != nil {
		return err
	}
	u, err := url.Parse(*ollamaURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--ollama %q is not a URL such as http://127.0.0.1:11434", *ollamaURL)
	}
	cfg.Ollama, cfg.Logger = u, log
	cfg.ID = *id
	if cfg.ID == "" {
		cfg.ID = defaultID(hostname, u)
	}

	opts := []nats.Option{
		nats.Name("ollamamax-worker-" + cfg.ID), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	nc, err := nats.Connect(*natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is the dispatcher or nats-server running?)", *natsURL, err)
	}
	defer nc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	q, err := queue.Setup(ctx, js, qopts)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = reg
	w, err := worker.New(nc, q, cfg)
	if err != nil {
		return err
	}
	if *listen != "" {
		stopHTTP, err := serveOps(*listen, reg, w, log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}
	err = w.Run(ctx)
	if derr := nc.Drain(); derr != nil {
		log.Warn("drain nats connection", "err", derr)
	}
	return err
}

// serveOps serves /metrics, /healthz and /readyz for operators and probes.
func serveOps(addr string, reg *prometheus.Registry, w *worker.Worker, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "ok\n") })
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if err := w.Ready(); err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ready\n")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics and health", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // Only probes and scrapes are cut short.
	}, nil
}

func addLabel(cfg *worker.Config, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", kv)
	}
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels[k] = v
	return nil
}

// defaultID makes a worker ID from the hostname and the Ollama port, so that
// several workers on one machine differ.
func defaultID(hostname string, u *url.URL) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, hostname)
	if clean == "" {
		clean = "worker"
	}
	if p := u.Port(); p != "" {
		clean += "-" + p
	}
	return clean
}
