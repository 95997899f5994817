package dispatcher

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/tlsreload"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ErrListen is wrapped by Run when it cannot listen on Config.HTTPAddr. The
// error also wraps the cause, so errors.Is(err, syscall.EADDRINUSE) tells that
// another process has the address.
var ErrListen = errors.New("dispatcher: cannot listen for HTTP")

// ErrMetricsListen is wrapped by Run when it cannot listen on
// Config.MetricsAddr, with the cause, as ErrListen is.
var ErrMetricsListen = errors.New("dispatcher: cannot listen for metrics")

// ErrOpenFleet is returned by Validate (and Run) for an embedded server that
// would listen beyond loopback without an auth directory: anyone who
// reaches it could read every prompt and answer and delete the queue. Set
// Embedded.AuthDir, or Insecure to accept that.
var ErrOpenFleet = errors.New("dispatcher: the embedded NATS server would let anyone in")

// ErrOpenAPI is returned by Validate (and Run) for an HTTP API that would
// listen beyond loopback without API keys: anyone who reaches it could use
// every model and delete models from every worker. Set RequireKeys, or
// Insecure to accept that.
var ErrOpenAPI = errors.New("dispatcher: the HTTP API would let anyone in")

// Config configures a dispatcher process.
type Config struct {
	// HTTPAddr is where the Ollama-compatible API listens. Loopback and not
	// 11434 by default, so it never collides with a local Ollama.
	HTTPAddr string
	// NATSURL is an existing NATS server or cluster. Empty starts an embedded
	// server with JetStream (see Embedded).
	NATSURL string
	// NATSOptions are extra options for the NATS connection (credentials, TLS).
	NATSOptions []nats.Option
	// Embedded configures the embedded server when NATSURL is empty. With
	// Embedded.AuthDir it runs in operator mode, and NATSOptions must carry
	// credentials for the in-process connection (the auth directory's
	// dispatcher user).
	Embedded broker.Config
	// Insecure lets the embedded server listen beyond loopback without an
	// auth directory, and the HTTP API without RequireKeys. Without it,
	// those are ErrOpenFleet and ErrOpenAPI.
	Insecure bool
	// RequireKeys makes every API route but /, /api/version, /healthz and
	// /readyz require an HTTP API key from the ollamaq_keys bucket
	// (ollamaq keys create; docs/security.md).
	RequireKeys bool
	// BodyTimeout bounds the time to read a whole request, body included
	// (http.Server.ReadTimeout): a request whose body has not arrived by
	// then gets 400 and its connection is closed. It does not bound the
	// answer, which can stream for minutes. Zero is the default, 60s.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no request for
	// this long. Zero is the default, 2m.
	IdleTimeout time.Duration
	// MaxConns caps the HTTP connections open at once; past it a new
	// connection gets 503 with Retry-After and is closed. Zero is the
	// default, 4096. Run lowers it to half the process's open-file limit,
	// which the embedded NATS server's clients need too.
	MaxConns int
	// MetricsAddr, if set, is where /metrics is served, over plain HTTP with
	// the API's timeouts, instead of on the API listener. Empty: /metrics is
	// one of the API's routes.
	MetricsAddr string
	// TLSCert and TLSKey are PEM files, the certificate (with any
	// intermediates after it) and its private key: with both, the API
	// serves HTTPS. Both or neither.
	TLSCert, TLSKey string
	// Reload, if set, asks Run for a reload each time it receives (the
	// dispatcher's main sends on SIGHUP): the settings Reconfigure returns,
	// and the TLS files read again, the embedded server's (Embedded.TLS)
	// and the API's (TLSCert, TLSKey). New connections then get the new
	// certificate; established ones, and the answers streaming on them,
	// are kept. A reload that fails in any part changes nothing and is
	// logged.
	Reload <-chan struct{}
	// Reconfigure, if set, returns the settings a reload changes to, given
	// the text of the dispatchers' shared settings (the ollamaq_config
	// bucket's entry "dispatcher"; "" when there is none): the dispatcher's
	// main parses its flags again, with the configuration file as it is
	// now. Run calls it on each receive from Reload, on each change of the
	// shared entry, and once before it serves if the entry holds
	// something. An error refuses the reload: Run logs it and keeps the
	// settings in use.
	Reconfigure func(shared string) (Settings, error)
	// Level, if set, is the level of Logger's handler: a reload sets it to
	// Settings.LogLevel.
	Level *slog.LevelVar
	// Queue adjusts the stream definitions (replicas, ack wait).
	Queue queue.Options
	// ID is this dispatcher's requester ID: its reply subjects are
	// ollamaq.reply.<ID>.>. It must be unique among running dispatchers.
	ID string
	// Options configure the HTTP shim. Run sets LoopbackOnly from HTTPAddr
	// and fills in Metrics, Gatherer and Ready itself.
	Options
}

// DefaultConfig returns the defaults, storing embedded JetStream data in storeDir.
func DefaultConfig(storeDir string) Config {
	return Config{
		HTTPAddr:    "127.0.0.1:11435",
		Embedded:    broker.DefaultConfig(storeDir),
		BodyTimeout: defaultBodyTimeout,
		IdleTimeout: defaultIdleTimeout,
		ID:          "d" + job.NewID()[:10],
		Options:     DefaultOptions(),
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("dispatcher: HTTPAddr %q: %w", c.HTTPAddr, err)
	}
	if _, _, err := net.SplitHostPort(c.MetricsAddr); c.MetricsAddr != "" && err != nil {
		return fmt.Errorf("dispatcher: MetricsAddr %q: %w", c.MetricsAddr, err)
	}
	if !broker.IsLoopback(c.HTTPAddr) && !c.RequireKeys && !c.Insecure {
		return fmt.Errorf("%w on %s without API keys", ErrOpenAPI, c.HTTPAddr)
	}
	if c.NATSURL == "" {
		if err := c.Embedded.Validate(); err != nil {
			return fmt.Errorf("dispatcher: embedded NATS: %w", err)
		}
		if c.Embedded.Listen != "" && !broker.IsLoopback(c.Embedded.Listen) && c.Embedded.AuthDir == "" && !c.Insecure {
			return fmt.Errorf("%w on %s without an auth directory", ErrOpenFleet, c.Embedded.Listen)
		}
	}
	switch {
	case c.BodyTimeout < 0:
		return fmt.Errorf("dispatcher: BodyTimeout must not be negative, got %s", c.BodyTimeout)
	case c.IdleTimeout < 0:
		return fmt.Errorf("dispatcher: IdleTimeout must not be negative, got %s", c.IdleTimeout)
	case c.MaxConns < 0:
		return fmt.Errorf("dispatcher: MaxConns must not be negative (0 is the default), got %d", c.MaxConns)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("dispatcher: HTTPS needs both TLSCert and TLSKey (--tls-cert and --tls-key), or neither")
	case !job.ValidToken(c.ID):
		return fmt.Errorf("dispatcher: ID %q is not a subject token", c.ID)
	case c.ID == job.BatchRequester:
		return fmt.Errorf("dispatcher: ID %q is reserved for batch results (docs/batch.md)", c.ID)
	}
	return c.Options.Validate()
}

// Run serves the HTTP API until ctx is done, then shuts down gracefully:
// in-flight responses get up to 30 seconds to finish. It binds its listeners
// before anything else: when the HTTP address is taken (ErrListen), the
// HTTPS certificate cannot be loaded, or the embedded server cannot start
// (broker.ErrListen, *broker.StoreDirInUseError), it returns at once with
// nothing left listening. It refuses to open the embedded server beyond
// loopback without authentication (ErrOpenFleet), and the API without API
// keys (ErrOpenAPI).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("%w on %s: %w", ErrListen, cfg.HTTPAddr, err)
	}
	defer func() { _ = ln.Close() }() // Serve closes it too; this covers returns before Serve.

	var metricsLn net.Listener // nil: /metrics is on the API listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("%w on %s: %w", ErrMetricsListen, cfg.MetricsAddr, err)
		}
		defer func() { _ = metricsLn.Close() }() // As ln.
	}
	var cert *tlsreload.Value[tls.Certificate] // nil without HTTPS
	if cfg.TLSCert != "" {
		if cert, err = tlsreload.New(tlsreload.KeyPair(cfg.TLSCert, cfg.TLSKey)); err != nil {
			return fmt.Errorf("dispatcher: HTTPS: %w", err)
		}
	}
	var b *broker.Broker // nil with NATSURL
	var nc *nats.Conn
	if cfg.NATSURL == "" {
		emb := cfg.Embedded
		emb.Logger = log.With("component", "nats-server")
		b, err = broker.Start(emb)
		if err != nil {
			return err
		}
		defer b.Shutdown()
		if cfg.Queue.Replicas == 0 {
			cfg.Queue.Replicas = 1
		}
		if emb.Listen != "" && !broker.IsLoopback(emb.Listen) && emb.AuthDir == "" {
			log.Warn("EMBEDDED NATS IS OPEN TO OTHER MACHINES WITHOUT AUTHENTICATION (insecure): anyone who can reach it can submit jobs, read replies and delete the queue. Give it an auth directory, restrict it with a firewall, or run a secured NATS server",
				"listen", b.ClientURL())
		}
		log.Info("embedded nats-server started", "workers_connect_to", b.ClientURL(), "store_dir", emb.StoreDir,
			"operator_mode", emb.AuthDir != "", "tls", emb.TLS.Enabled(), "client_certificates", emb.TLS.CA != "")
		nc, err = b.Connect(append([]nats.Option{nats.Name("ollamamax-dispatcher")}, cfg.NATSOptions...)...)
		if err != nil {
			return err
		}
	} else {
		opts := append([]nats.Option{nats.Name("ollamamax-dispatcher"), nats.MaxReconnects(-1)}, cfg.NATSOptions...)
		nc, err = nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", cfg.NATSURL, err)
		}
	}
	defer nc.Close()
	q, err := queue.SetupConn(ctx, nc, cfg.Queue)
	if err != nil {
		return err
	}
	// A restarted nats-server lost the node bucket (memory), which workers
	// with worker credentials may not create.
	queue.ReapplyOnReconnect(ctx, nc, cfg.Queue, func(err error) { log.Warn("nats reconnected", "err", err) })
	// The watcher stops when view.Run returns. Bound to ctx, it could close
	// before runCtx, its child, is canceled too, and a clean stop would
	// look like a failed watcher ("fleet: node watcher closed").
	view, err := fleet.Watch(context.WithoutCancel(ctx), q.Nodes())
	if err != nil {
		return err
	}
	req, err := queue.NewRequester(nc, q, cfg.ID)
	if err != nil {
		return err
	}
	defer func() { _ = req.Close() }() // Closing also happens via nc.Drain below.

	o := cfg.Options
	maxBody := nc.MaxPayload() - 4096 // Headers need room too.
	if maxBody < o.MaxBody {
		o.MaxBody = maxBody
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ready := func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}
	if !broker.IsLoopback(cfg.HTTPAddr) && !cfg.RequireKeys {
		log.Warn("HTTP API IS OPEN TO OTHER MACHINES WITHOUT API KEYS (insecure): anyone who can reach it can use every model and delete models from every worker. Require keys, or restrict it with a firewall",
			"listen", cfg.HTTPAddr)
	}
	o.LoopbackOnly, o.Metrics, o.Gatherer, o.Ready = broker.IsLoopback(cfg.HTTPAddr), reg, reg, ready
	if metricsLn != nil {
		o.Gatherer = nil // Served on its own listener only.
	}
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	keys, err := watchKeys(runCtx, &wg, stop, q, cfg.RequireKeys, &o, log)
	if err != nil {
		return err
	}
	h, err := NewServer(q, req, view, o)
	if err != nil {
		return err
	}
	defer h.bodies.close()
	current := cfg.settings()
	current.MaxBody = o.MaxBody // As lowered to what NATS carries, or a reload would see a change.
	if err := startReloads(runCtx, &wg, q, reloader{cfg: cfg, h: h, b: b, cert: cert, maxBody: maxBody, log: log, current: current}); err != nil {
		return err
	}
	maxConns := connCap(cfg.MaxConns, openFileLimit())
	if cfg.MaxConns > maxConns {
		log.Warn("max_conns lowered to half the open-file limit", "max_conns", maxConns, "asked", cfg.MaxConns)
	}
	var secure func(net.Conn) net.Conn // TLS for the refusals past the cap
	if cert != nil {
		// A refusal is one HTTP/1.1 response, whatever the client offers.
		refusal := &tls.Config{GetCertificate: cert.Get, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
		secure = func(c net.Conn) net.Conn { return tls.Server(c, refusal) }
	}
	lim := newConnLimiter(ln, maxConns, secure, log, reg)
	defer lim.wait()
	bodyTimeout, idleTimeout := cmp.Or(cfg.BodyTimeout, defaultBodyTimeout), cmp.Or(cfg.IdleTimeout, defaultIdleTimeout)
	srv := newHTTPServer(h, bodyTimeout, idleTimeout, log)
	scheme := "http://"
	if cert != nil {
		srv.TLSConfig, scheme = &tls.Config{GetCertificate: cert.Get, MinVersion: tls.VersionTLS12}, "https://"
	}

	var viewErr, limitsErr error
	wg.Go(func() {
		viewErr = view.Run(runCtx)
		stop()
	})
	wg.Go(func() {
		if limitsErr = h.Run(runCtx); limitsErr != nil {
			stop()
		}
	})
	// Keys' budgets must hold what every dispatcher spent in the last
	// minute before this one admits anything against them.
	select {
	case <-h.LimitsReady():
	case <-runCtx.Done():
	case <-time.After(10 * time.Second):
		log.Warn("serving before the rate-limit charges of the last minute were replayed: keys may exceed their limits for a minute")
	}
	serveErr := make(chan error, 1)
	wg.Go(func() {
		if srv.TLSConfig != nil {
			serveErr <- srv.ServeTLS(lim, "", "") // The certificate comes from GetCertificate.
		} else {
			serveErr <- srv.Serve(lim)
		}
		stop() // Serve ends early only when the listener fails.
	})
	var metricsSrv *http.Server // nil: /metrics is on the API listener
	metricsErr, metricsURL := make(chan error, 1), scheme+ln.Addr().String()+"/metrics"
	if metricsLn != nil {
		metricsSrv, metricsURL = newHTTPServer(metricsHandler(reg), bodyTimeout, idleTimeout, log), "http://"+metricsLn.Addr().String()+"/metrics"
		wg.Go(func() {
			metricsErr <- metricsSrv.Serve(metricsLn)
			stop() // As for the API.
		})
	}
	log.Info("dispatcher listening", "http", scheme+ln.Addr().String(), "requester", cfg.ID, "max_conns", maxConns, "metrics", metricsURL)

	<-runCtx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if metricsSrv != nil {
		if err := metricsSrv.Shutdown(shutdownCtx); err != nil {
			log.Warn("metrics http shutdown", "err", err)
		}
	}
	stop()
	wg.Wait()
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	if metricsSrv != nil {
		if err := <-metricsErr; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve metrics: %w", err)
		}
	}
	if err := nc.Drain(); err != nil {
		log.Warn("drain nats connection", "err", err)
	}
	log.Info("dispatcher stopped")
	return errors.Join(viewErr, limitsErr, keys.err)
}

// keyGuardEvery is how often a dispatcher checks that its key watch keeps
// up with the bucket (apikey.Cache.Guard): a stuck watch refuses keys
// within two to three of these.
const keyGuardEvery = 2 * time.Second

// keyWatch is the watch of the API key bucket a dispatcher with keys runs.
type keyWatch struct{ err error }

// watchKeys binds the API key bucket. With required, it follows the keys in
// a goroutine on wg until ctx ends, waits for their first copy, and puts
// the cache and the MAC secret into o; if the watch fails it calls stop:
// a dispatcher that can no longer see revocations must not go on serving.
// Without required, it warns when the bucket holds keys that will not be
// asked for.
func watchKeys(ctx context.Context, wg *sync.WaitGroup, stop func(), q *queue.Queue, required bool, o *Options, log *slog.Logger) (*keyWatch, error) {
	kw := &keyWatch{}
	kv, err := q.Keys(ctx)
	if err != nil {
		return nil, err
	}
	if !required {
		if l, err := kv.ListKeysFiltered(ctx, "key.*"); err == nil {
			n := 0
			for range l.Keys() {
				n++
			}
			if n > 0 {
				log.Warn("the API key bucket holds keys, but this dispatcher does not require them (--keys): anyone who reaches its API may use it", "keys", n)
			}
		}
		return kw, nil
	}
	cache, err := apikey.Watch(ctx, kv)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { cache.Guard(ctx, kv, keyGuardEvery) })
	wg.Go(func() {
		if kw.err = cache.Run(ctx); kw.err != nil {
			log.Error("the API key watch failed: stopping", "err", kw.err)
			stop()
		}
	})
	select {
	case <-cache.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, errors.New("dispatcher: the API key bucket did not load within 30s")
	}
	if o.MACSecret, err = apikey.MACSecret(ctx, kv); err != nil {
		return nil, err
	}
	o.Keys = cache
	log.Info("API keys required", "keys", cache.Len())
	return kw, nil
}
