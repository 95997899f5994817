// Package fleettest starts a whole OllamaMax deployment inside a test: a real
// in-process nats-server with JetStream (or a three-node cluster, with
// workers attached through leaf nodes), simulated Ollamas on real HTTP
// servers, workers in front of them, and the dispatcher's HTTP shim.
package fleettest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natscluster"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// Options shape the deployment.
type Options struct {
	Workers   int              // workers, each with its own simulated Ollama; default 2
	Slots     int              // slots per worker; default 2
	Sim       ollamasim.Config // simulator configuration; default ollamasim.DefaultConfig with fast tokens
	AckWait   time.Duration    // consumer ack wait; default 30s
	QueueWait time.Duration    // dispatcher queue wait; default 30s
	MaxQueued int              // dispatcher bound on waiting interactive jobs per model; 0 none
	// TenantWindow and TenantHeld are the dispatcher's tenant fairness
	// (dispatcher.Options); zero TenantWindow is off.
	TenantWindow time.Duration
	TenantHeld   int
	Grace        time.Duration // workers' drain grace period; default 5s
	Breaker      time.Duration // workers' circuit-breaker cool-down; default 300ms
	Heartbeat    time.Duration // workers' inventory and node-record refresh; default 500ms
	Silence      time.Duration // dispatcher bound on a started answer's silence; default its own
	MaxBody      int64         // dispatcher's largest request body; default 1 MiB
	// BodyBudget is the dispatcher's bound on large request bodies held
	// (dispatcher.Options.BodyBudget); default its own.
	BodyBudget int64
	// Stall is how long a started job may be silent before the dispatcher
	// NAKs it (dispatcher.Options.Stall); default its own, 750ms.
	Stall time.Duration
	// Auth runs the broker in operator mode on a fresh auth directory
	// (pkg/auth) and connects everything with role credentials: the
	// dispatcher as auth.DispatcherUser (its requester ID), worker i as the
	// worker user w<i> (its ID), NC as an admin. A permission violation on
	// any of the fleet's own connections fails the test.
	Auth bool
	// Keys makes the dispatcher require HTTP API keys (pkg/apikey);
	// CreateKey makes them.
	Keys bool
	// Cluster runs the fleet on a three-node nats-server cluster
	// (internal/natscluster; in operator mode with Auth) instead of one
	// server: the streams and the node bucket get three replicas
	// (queue.Options.Replicas), the dispatcher and NC connect to node 0,
	// worker i to node (i+1)%3, further dispatchers and clients round the
	// nodes, all over TCP with the list of every node, so that each
	// reconnects to another when its node goes down. Broker is then nil.
	Cluster bool
	// LeafWorkers attaches the last LeafWorkers workers each through a leaf
	// node of its own (natscluster.Leaf) that dials into the cluster, as a
	// GPU box that can only dial out does; with Auth the leaf presents the
	// worker's credentials, and the worker connects to it with them. It
	// needs Cluster.
	LeafWorkers int
	// Versions, if set, are the Ollama versions of the simulators, by
	// worker (the rest keep Sim.Version): each reports its version and
	// answers a route of job.Routes that version lacks with the 404 of
	// that Ollama's router. A fleet of mixed Ollamas.
	Versions []string
	// Ollama, if set, wraps worker i's simulator: a test adds what a newer
	// Ollama serves, or counts what reached which Ollama.
	Ollama func(i int, sim http.Handler) http.Handler
	// OllamaURLs puts one worker in front of each of these Ollamas (real
	// ones, say) instead of simulators: Workers and Sim are then ignored,
	// Sims is empty, SimURLs holds these URLs and SetOllamaDown does
	// nothing.
	OllamaURLs []*url.URL
	// Worker, if set, adjusts worker i's configuration before it starts
	// (warm-first scheduling knobs, say).
	Worker func(i int, c *worker.Config)
	// Tracer and WorkerTracer, if set, trace the dispatcher and every
	// worker (dispatcher.Options.Tracer, worker.Config.Tracer): give them
	// providers of their own to see what crosses NATS.
	Tracer, WorkerTracer trace.TracerProvider
}

// AuthModes are the two modes suites run in: a subtest each.
var AuthModes = []struct {
	Name string
	Auth bool
}{{"auth off", false}, {"auth on", true}}

// AdminUser is the admin user NC connects as when Options.Auth is set.
const AdminUser = "fleet-admin"

// Fleet is a running deployment. Everything stops when the test ends.
type Fleet struct {
	t       testing.TB
	Broker  *broker.Broker       // the single server; nil with Options.Cluster
	Cluster *natscluster.Cluster // with Options.Cluster
	NC      *nats.Conn           // a client connection for the test itself
	Queue   *queue.Queue
	View    *fleet.View
	URL     string // the dispatcher's base URL; /metrics serves its metrics
	Sims    []*ollamasim.Server
	SimURLs []*url.URL

	// WorkerMetricsURLs serve each worker's /metrics (index as Sims).
	WorkerMetricsURLs []string

	opts    Options
	view    *fleet.View
	keys    *apikey.Store   // nil without Options.Keys
	caches  []*apikey.Cache // every dispatcher's, guarded by mu
	auth    *auth.Dir       // nil without Options.Auth
	vmu     sync.Mutex
	viol    []string // permission violations on the fleet's connections
	regs    []*atomic.Pointer[prometheus.Registry]
	down    []*atomic.Bool
	mu      sync.Mutex
	workers []*runningWorker
	leaves  []*natscluster.Leaf // by worker; nil for a worker on a cluster node
	conns   int                 // connections placed round the cluster's nodes, guarded by mu
}

type runningWorker struct {
	nc   *nats.Conn
	stop context.CancelFunc
	done chan error
}

// Logger is the logger tests use: silent unless OLLAMAMAX_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("OLLAMAMAX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start brings up the deployment and waits until every worker is in the node bucket.
func Start(t testing.TB, o Options) *Fleet {
	t.Helper()
	if o.OllamaURLs != nil {
		o.Workers = len(o.OllamaURLs)
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Slots == 0 {
		o.Slots = 2
	}
	if o.Sim.Models == nil {
		o.Sim = ollamasim.DefaultConfig()
		o.Sim.TokensPerSecond = 2000
		o.Sim.TimeToFirstToken = time.Millisecond
	}
	if o.QueueWait == 0 {
		o.QueueWait = 30 * time.Second
	}
	if o.Grace == 0 {
		o.Grace = 5 * time.Second
	}
	if o.Breaker == 0 {
		o.Breaker = 300 * time.Millisecond
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 500 * time.Millisecond
	}
	if o.LeafWorkers > 0 && !o.Cluster {
		t.Fatal("fleettest: LeafWorkers needs Cluster")
	}
	if o.LeafWorkers > o.Workers {
		t.Fatalf("fleettest: LeafWorkers %d > Workers %d", o.LeafWorkers, o.Workers)
	}
	f := &Fleet{t: t, opts: o}
	requester := "dtest"
	var dnc *nats.Conn // the dispatcher's connection
	if o.Auth {
		// Registered first, so it runs last: after every connection closed.
		t.Cleanup(f.checkViolations)
		var err error
		if f.auth, err = auth.Init(filepath.Join(t.TempDir(), "auth")); err != nil {
			t.Fatalf("auth init: %v", err)
		}
		f.issue(AdminUser, auth.Admin)
	}
	switch {
	case o.Cluster:
		co := natscluster.Options{Logger: Logger()}
		if f.auth != nil {
			co.AuthDir = f.auth.Path()
		}
		f.Cluster = natscluster.Start(t, co)
	case o.Auth:
		cfg := broker.DefaultConfig(t.TempDir())
		cfg.Listen = "127.0.0.1:-1"
		cfg.AuthDir = f.auth.Path()
		f.Broker = natstest.StartWith(t, cfg)
	default:
		f.Broker = natstest.Start(t)
	}
	if o.Auth {
		f.NC = f.connectAt(0, AdminUser)
		dnc = f.connectAt(0, auth.DispatcherUser)
		requester = auth.DispatcherUser
	} else {
		f.NC = f.connectAt(0, "")
		dnc = f.NC
	}
	// The dispatcher applies streams/, as in a deployment: workers with
	// worker credentials may not.
	djs, err := jetstream.New(dnc)
	if err != nil {
		t.Fatal(err)
	}
	dq, err := queue.Setup(t.Context(), djs, f.queueOptions())
	if err != nil {
		t.Fatal(err)
	}
	f.Queue = dq
	if o.Auth {
		// The test's own handle, as the admin: it inspects the streams.
		js, err := jetstream.New(f.NC)
		if err != nil {
			t.Fatal(err)
		}
		if f.Queue, err = queue.Setup(t.Context(), js, f.queueOptions()); err != nil {
			t.Fatal(err)
		}
	}
	f.leaves = make([]*natscluster.Leaf, o.Workers)
	for i := o.Workers - o.LeafWorkers; i < o.Workers; i++ {
		// One leaf per GPU box; in operator mode it presents the box's
		// worker credentials.
		lo := natscluster.LeafOptions{}
		if f.auth != nil {
			lo.Credentials = f.CredsPath(f.issue(workerID(i), auth.Worker))
		}
		f.leaves[i] = f.Cluster.StartLeaf(t, lo)
	}
	ctx, cancel := context.WithCancel(context.Background())
	view, err := fleet.Watch(ctx, dq.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	f.View = view
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-viewDone })

	for i := 0; i < o.Workers; i++ {
		down := new(atomic.Bool)
		f.down = append(f.down, down)
		if o.OllamaURLs != nil {
			f.SimURLs = append(f.SimURLs, o.OllamaURLs[i])
		} else {
			cfg := o.Sim
			if i < len(o.Versions) {
				cfg.Version = o.Versions[i]
			}
			sim := ollamasim.New(cfg)
			var ollama http.Handler = sim
			if i < len(o.Versions) {
				ollama = ollamaOf(o.Versions[i], sim)
			}
			if o.Ollama != nil {
				ollama = o.Ollama(i, ollama)
			}
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if down.Load() {
					// Like a crashed Ollama: the connection closes without an answer.
					if hj, ok := w.(http.Hijacker); ok {
						if conn, _, err := hj.Hijack(); err == nil {
							_ = conn.Close()
							return
						}
					}
				}
				ollama.ServeHTTP(w, r)
			}))
			t.Cleanup(hs.Close)
			u, _ := url.Parse(hs.URL) // httptest URLs always parse.
			f.Sims = append(f.Sims, sim)
			f.SimURLs = append(f.SimURLs, u)
		}
		reg := new(atomic.Pointer[prometheus.Registry])
		f.regs = append(f.regs, reg)
		ms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			promhttp.HandlerFor(reg.Load(), promhttp.HandlerOpts{}).ServeHTTP(w, r)
		}))
		t.Cleanup(ms.Close)
		f.WorkerMetricsURLs = append(f.WorkerMetricsURLs, ms.URL+"/metrics")
		f.StartWorker(i)
	}

	f.view = view
	f.URL = f.startDispatcher(dnc, dq, requester)

	f.WaitFor("all workers in the node bucket", func() bool { return len(view.Nodes()) == o.Workers })
	return f
}

// ollamaOf is sim as an Ollama of version v: a route of job.Routes that
// version does not have answers its router's 404.
func ollamaOf(v string, sim http.Handler) http.Handler {
	missing := map[string]bool{}
	for _, rt := range job.Routes() {
		if !rt.In(v) {
			missing[rt.Path] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if missing[r.URL.Path] {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "404 page not found")
			return
		}
		sim.ServeHTTP(w, r)
	})
}

// startDispatcher serves the dispatcher's HTTP shim as requester id on nc,
// and returns its base URL.
func (f *Fleet) startDispatcher(nc *nats.Conn, q *queue.Queue, id string) string {
	t, o := f.t, f.opts
	t.Helper()
	req, err := queue.NewRequester(nc, q, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	reg := prometheus.NewRegistry()
	opts := dispatcher.Options{MaxBody: cmp.Or(o.MaxBody, 1<<20), QueueWait: o.QueueWait, Logger: Logger(),
		MaxQueued: o.MaxQueued, TenantWindow: o.TenantWindow, TenantHeld: o.TenantHeld, MaxSilence: o.Silence, BodyBudget: o.BodyBudget, Stall: o.Stall, Metrics: reg, Gatherer: reg, Tracer: o.Tracer}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if o.Keys {
		kv, err := q.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f.keys == nil { // The test's store, as the admin: a dispatcher may not write keys.
			akv, err := f.Queue.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f.keys = apikey.NewStore(akv)
		}
		cache, err := apikey.Watch(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = cache.Run(ctx) })
		<-cache.Ready()
		f.mu.Lock()
		f.caches = append(f.caches, cache)
		f.mu.Unlock()
		if opts.MACSecret, err = apikey.MACSecret(ctx, kv); err != nil {
			t.Fatal(err)
		}
		opts.Keys = cache
	}
	srv, err := dispatcher.NewServer(q, req, f.view, opts)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil {
			t.Errorf("dispatcher %s: %v", id, err)
		}
	})
	select {
	case <-srv.LimitsReady():
	case <-time.After(10 * time.Second):
		t.Fatalf("dispatcher %s: the rate-limit charges were not replayed within 10s", id)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

// StartDispatcher starts another dispatcher's HTTP shim, requester id, on
// the same fleet, and returns its base URL. With Options.Auth it connects
// on new dispatcher credentials named id.
func (f *Fleet) StartDispatcher(id string) string {
	f.t.Helper()
	nc := f.NC
	switch {
	case f.auth != nil:
		nc = f.connect(f.issue(id, auth.Dispatcher))
	case f.Cluster != nil:
		nc = f.connect("") // Its own node.
	}
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	q, err := queue.Setup(f.t.Context(), js, f.queueOptions())
	if err != nil {
		f.t.Fatal(err)
	}
	return f.startDispatcher(nc, q, id)
}

// CreateKey stores an API key made from k (ID and hash filled in) and
// returns it with its secret; it requires Options.Keys. It returns once
// every dispatcher's watch has delivered the key, so that a request with it
// right away is not refused as unknown.
func (f *Fleet) CreateKey(k apikey.Key) (apikey.Key, string) {
	f.t.Helper()
	if f.keys == nil {
		f.t.Fatal("fleettest: CreateKey needs Options.Keys")
	}
	k, secret, err := f.keys.Create(f.t.Context(), k, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	caches := f.caches
	f.mu.Unlock()
	f.WaitFor("every dispatcher to have key "+k.ID, func() bool {
		for _, c := range caches {
			if _, ok := c.Get(k.ID); !ok {
				return false
			}
		}
		return true
	})
	return k, secret
}

// Keys is the fleet's API key store (nil without Options.Keys).
func (f *Fleet) Keys() *apikey.Store { return f.keys }

// StartWorker starts worker i (again) in front of simulator i, on its own connection.
func (f *Fleet) StartWorker(i int) {
	f.t.Helper()
	id := workerID(i)
	user := ""
	if f.auth != nil {
		if _, uerr := f.auth.User(id); uerr != nil { // A restarted worker keeps its credentials.
			f.issue(id, auth.Worker)
		}
		user = id
	}
	nc, err := f.dial(f.WorkerNode(i), f.leaves[i], user)
	if err != nil {
		f.t.Fatal(err)
	}
	// The worker's own queue handle on its own connection, as in its own
	// process: killing the connection cuts off everything the worker does.
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	// With worker credentials it may not manage streams: it binds them, as
	// cmd/worker does with such credentials. Replicas 0 keeps what the
	// dispatcher chose.
	q, err := queue.Setup(f.t.Context(), js, queue.Options{AckWait: f.opts.AckWait, BindOnly: f.auth != nil})
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := worker.DefaultConfig(id, f.SimURLs[i])
	cfg.Slots = f.opts.Slots
	cfg.Heartbeat = f.opts.Heartbeat
	cfg.Poll = 200 * time.Millisecond
	cfg.UnservedScan = 200 * time.Millisecond
	cfg.Grace = f.opts.Grace
	cfg.RetryDelay = 100 * time.Millisecond
	cfg.BreakerCooldown = f.opts.Breaker
	cfg.Logger = Logger()
	cfg.Tracer = f.opts.WorkerTracer
	// A restarted worker is a new process: its metrics start from zero.
	reg := prometheus.NewRegistry()
	f.regs[i].Store(reg)
	cfg.Metrics = reg
	if f.opts.Worker != nil {
		f.opts.Worker(i, &cfg)
	}
	w, err := worker.New(nc, q, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{nc: nc, stop: cancel, done: make(chan error, 1)}
	go func() {
		rw.done <- w.Run(ctx)
		nc.Close()
	}()
	f.mu.Lock()
	for len(f.workers) <= i {
		f.workers = append(f.workers, nil)
	}
	f.workers[i] = rw
	f.mu.Unlock()
	f.t.Cleanup(func() { f.StopWorker(i) })
}

// issue gives user name credentials of role r in the fleet's auth directory.
func (f *Fleet) issue(name string, r auth.Role) string {
	f.t.Helper()
	if _, _, err := f.auth.AddUser(name, auth.UserOptions{Role: r, CredsFile: f.auth.CredsPath(name)}); err != nil {
		f.t.Fatalf("auth add %s --role %s: %v", name, r, err)
	}
	return name
}

// options are the nats options of user name's credentials, as the commands
// use them (cli.ReadCreds), with a handler that records the permission
// violations the server reports to the connection.
func (f *Fleet) options(name string) []nats.Option {
	f.t.Helper()
	c, err := auth.ReadCreds(f.auth.CredsPath(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return append(c.Options(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			f.vmu.Lock()
			defer f.vmu.Unlock()
			f.viol = append(f.viol, name+": "+err.Error())
		}
	}))
}

// workerID is worker i's ID, and in operator mode its user's name.
func workerID(i int) string { return fmt.Sprintf("w%d", i) }

// queueOptions are the queue options of the processes that apply streams/.
func (f *Fleet) queueOptions() queue.Options {
	o := queue.Options{AckWait: f.opts.AckWait}
	if f.Cluster != nil {
		o.Replicas = len(f.Cluster.Nodes())
	}
	return o
}

// WorkerNode is the cluster node worker i connects to (-1 without
// Options.Cluster, or for a worker behind a leaf node).
func (f *Fleet) WorkerNode(i int) int {
	if f.Cluster == nil || f.leaves[i] != nil {
		return -1
	}
	return (i + 1) % len(f.Cluster.Nodes())
}

// Leaf is the leaf node worker i connects through, or nil.
func (f *Fleet) Leaf(i int) *natscluster.Leaf { return f.leaves[i] }

// dial opens a connection as user name ("" without Options.Auth): to the
// leaf if not nil, else to cluster node node, else in-process to the
// single server.
func (f *Fleet) dial(node int, leaf *natscluster.Leaf, name string) (*nats.Conn, error) {
	var opts []nats.Option
	if name != "" {
		opts = f.options(name)
	}
	switch {
	case leaf != nil:
		return leaf.Connect(opts...)
	case f.Cluster != nil:
		return f.Cluster.Connect(node, opts...)
	}
	return f.Broker.Connect(opts...)
}

// connectAt opens a connection as user name ("" without Options.Auth) to
// cluster node node (the single server without Options.Cluster), closed
// when the test ends.
func (f *Fleet) connectAt(node int, name string) *nats.Conn {
	f.t.Helper()
	nc, err := f.dial(node, nil, name)
	if err != nil {
		f.t.Fatalf("connect as %q: %v", name, err)
	}
	f.t.Cleanup(nc.Close)
	return nc
}

// connect is connectAt on the next node round the cluster.
func (f *Fleet) connect(name string) *nats.Conn {
	f.t.Helper()
	node := 0
	if f.Cluster != nil {
		f.mu.Lock()
		f.conns++
		node = f.conns % len(f.Cluster.Nodes())
		f.mu.Unlock()
	}
	return f.connectAt(node, name)
}

func (f *Fleet) checkViolations() {
	f.vmu.Lock()
	defer f.vmu.Unlock()
	if len(f.viol) > 0 {
		f.t.Errorf("permission violations on the fleet's connections:\n%s", strings.Join(f.viol, "\n"))
	}
}

// ClientConn returns a connection as a new user name of role client (its
// requester token is name), closed when the test ends; it requires
// Options.Auth. Its permission violations fail the test too: a test that
// expects one should connect on its own, from CredsPath.
func (f *Fleet) ClientConn(name string) *nats.Conn {
	f.t.Helper()
	if f.auth == nil {
		f.t.Fatal("fleettest: ClientConn needs Options.Auth")
	}
	return f.connect(f.issue(name, auth.Client))
}

// CredsPath is the credentials file of user name of the fleet's auth
// directory ("" without Options.Auth).
func (f *Fleet) CredsPath(name string) string {
	if f.auth == nil {
		return ""
	}
	return f.auth.CredsPath(name)
}

// StopWorker stops worker i gracefully and waits for it. It is idempotent.
func (f *Fleet) StopWorker(i int) {
	f.mu.Lock()
	rw := f.workers[i]
	f.workers[i] = nil
	f.mu.Unlock()
	if rw == nil {
		return
	}
	rw.stop()
	if err := <-rw.done; err != nil {
		f.t.Errorf("worker %d: %v", i, err)
	}
}

// KillWorker cuts worker i off as a crash would: its NATS connection closes
// at once, so nothing it was running is acked, nacked or answered, and its
// jobs come back only through JetStream's redelivery after the ack wait.
func (f *Fleet) KillWorker(i int) {
	f.mu.Lock()
	rw := f.workers[i]
	f.mu.Unlock()
	if rw == nil {
		return
	}
	rw.nc.Close()
	rw.stop()
}

// ReconnectWorker makes worker i's NATS connection drop and reconnect, as
// after a nats-server restart, and waits until it is back.
func (f *Fleet) ReconnectWorker(i int) {
	f.mu.Lock()
	rw := f.workers[i]
	f.mu.Unlock()
	if rw == nil {
		f.t.Fatalf("worker %d is not running", i)
	}
	before := rw.nc.Stats().Reconnects
	if err := rw.nc.ForceReconnect(); err != nil {
		f.t.Fatalf("reconnect worker %d: %v", i, err)
	}
	f.WaitFor(fmt.Sprintf("worker %d to reconnect", i), func() bool { return rw.nc.Stats().Reconnects > before && rw.nc.IsConnected() })
}

// SetOllamaDown makes simulated Ollama i drop every connection unanswered
// (down=true), or answer again.
func (f *Fleet) SetOllamaDown(i int, down bool) { f.down[i].Store(down) }

// Node returns worker i's record from the node bucket, or nil.
func (f *Fleet) Node(i int) *fleet.Node {
	id := fmt.Sprintf("w%d", i)
	for _, n := range f.View.Nodes() {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// WaitFor polls cond until it holds, failing the test after 15 seconds.
func (f *Fleet) WaitFor(what string, cond func() bool) {
	f.t.Helper()
	WaitFor(f.t, 15*time.Second, what, cond)
}

// WaitFor polls cond every 10ms until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
