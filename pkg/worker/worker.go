// Package worker runs beside one Ollama: it discovers the models its Ollama
// has, pulls jobs for them only as far as it has free slots (interactive before
// batch), relays Ollama's response to each job's reply subject, settles each
// job with JetStream, and keeps its node record in the KV bucket. With the
// other workers it answers the jobs nothing would take: those left unsettled
// by dead workers (reap.go) and those for models no worker has (unserved.go).
//
// It writes an audit record of every queued job it ends (audit.go) and puts
// Ollama's token counts on done replies (usage.go), and traces each job's
// run when given a tracer (trace.go). The lowest-ID worker of a model tells
// its waiting interactive jobs their place in the queue (position.go).
//
// It imports NATS, the queue, fleet, ollama, audit, tracing and job
// packages and OpenTelemetry's API; nothing imports it but cmd/worker and
// tests.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a worker. Run uses all of it; New ignores the NATS and
// Listen fields, since it is given a connection and serves no HTTP.
type Config struct {
	// NATSURL is the NATS server or cluster, NATSOptions the extra options of
	// the connection (credentials, TLS).
	NATSURL     string
	NATSOptions []nats.Option
	// Queue adjusts the stream definitions (ack wait).
	Queue queue.Options
	// Listen is where /metrics, /healthz and /readyz are served; "" serves
	// nothing.
	Listen string
	// ID names the worker in the node bucket and in logs; a subject token.
	ID string
	// Ollama is the base URL of the Ollama server this worker serves.
	Ollama *url.URL
	// Slots is how many jobs run at once, like OLLAMA_NUM_PARALLEL.
	Slots int
	// InteractiveReserve is how many of the slots only interactive jobs
	// may take: async and batch jobs use the rest, so that an interactive
	// job finds a free slot while a batch runs (docs/scheduling.md). It
	// never takes a worker's last slot: a 1-slot worker reserves none.
	// 0 lets any lane take any slot, as before.
	InteractiveReserve int
	// FetchBytes bounds the bytes of jobs one pull brings at once (and of
	// node commands waiting to run), so that a burst of large jobs, such as
	// requests with images, never floods the connection that carries this
	// worker's replies, heartbeats and resume questions, nor makes the
	// server cut it as a slow consumer (docs/operations.md, "Large
	// requests"). It is raised to the largest message the connection
	// carries, so that every job fits in a pull; 0 means the default,
	// DefaultFetchBytes.
	FetchBytes int64
	// Labels describe the worker (gpu=a100, zone=eu); fleet operations such as
	// /api/pull?label=gpu=a100 choose workers by them.
	Labels map[string]string
	// Heartbeat is how often the worker refreshes its inventory from Ollama and
	// its record in the node bucket; the record outlives its last refresh by
	// three heartbeats (fleet.RecordTTL). At most 5s, so that the record's
	// TTL stays under the bucket's max_age (15s).
	Heartbeat time.Duration
	// Poll is how often an idle worker looks for redelivered jobs, which ring no
	// doorbell. New jobs are pulled as soon as they are stored.
	Poll time.Duration
	// UnservedScan is how often the worker looks for interactive jobs for
	// models no worker has ever served, which nothing would take, to answer
	// them 404 and remove them as the dispatcher does over HTTP.
	UnservedScan time.Duration
	// RetryDelay is how long a job that met a transient Ollama failure waits
	// before its next delivery; it doubles with each attempt.
	RetryDelay time.Duration
	// BreakerCooldown is how long a worker whose Ollama failed several jobs
	// in a row stops pulling before it tries again; it doubles while the
	// failures go on, up to a minute.
	BreakerCooldown time.Duration
	// ColdAfter turns on warm-first scheduling (docs/scheduling.md): a
	// worker whose Ollama does not have a job's model loaded takes jobs of
	// that model only after the work of the models it has loaded, and only
	// when no other live worker has the model loaded, or the model's oldest
	// waiting job has waited ColdAfter, or its waiting jobs reach
	// ColdBacklog per slot of the workers that have it loaded. 0 turns it
	// off: every worker takes any job of the models its Ollama has, in
	// arrival order, as before.
	ColdAfter time.Duration
	// ColdBacklog is the depth, in waiting jobs per warm slot, at which a
	// worker takes a job of a model it would have to load before
	// ColdAfter; 0 means only ColdAfter counts.
	ColdBacklog int
	// StarveAfter bounds how long a model that no live worker has loaded
	// waits while every worker is busy with loaded models: a worker with a
	// free slot takes its oldest job before any of its own models' work
	// once it has waited this long. 0 means 5 × ColdAfter.
	StarveAfter time.Duration
	// AffinityWait turns on session affinity (docs/scheduling.md): a job
	// that prefers another worker (job.HeaderPrefer), on one of its first
	// two deliveries and while younger than AffinityWait, goes back to the queue
	// for that worker when its node record shows it ready with the model
	// loaded and a free slot. 0 turns it off: every worker runs what it takes.
	AffinityWait time.Duration
	// Grace bounds how long a stopping worker lets in-flight jobs finish before
	// it hands them back to the queue.
	Grace time.Duration
	// Logger receives the worker's log.
	Logger *slog.Logger
	// Metrics is where the worker registers its Prometheus metrics; nil
	// registers them nowhere.
	Metrics prometheus.Registerer
	// Tracer, if set, traces each job's run in the trace its job carries
	// and passes the trace context on to Ollama (trace.go;
	// tracing.Setup makes it from the OTEL_* environment). Nil traces
	// nothing, at no cost.
	Tracer trace.TracerProvider
	// Reload, if set, asks Run for a reload each time it receives (the
	// worker's main sends on SIGHUP): the settings Reconfigure returns.
	// Reconfigure, if set, returns them, given the text of the workers'
	// shared settings (the ollamaq_config bucket's entry "worker"; ""
	// when there is none); Run calls it on each receive from Reload, on
	// each change of the shared entry, and once before it pulls if the
	// entry holds something. An error refuses the reload: Run logs it and
	// keeps the settings in use. Level, if set, is the level of Logger's
	// handler, which a reload sets to Settings.LogLevel. New ignores all
	// three (reload.go).
	Reload      <-chan struct{}
	Reconfigure func(shared string) (Settings, error)
	Level       *slog.LevelVar
}

// DefaultFetchBytes is the default of Config.FetchBytes: two jobs of the
// largest size the default NATS payload (8 MiB) carries, a quarter of what
// nats-server lets wait for one connection before it cuts it (64 MiB).
const DefaultFetchBytes = 16 << 20

// DefaultConfig returns the defaults for the Ollama at u.
func DefaultConfig(id string, u *url.URL) Config {
	return Config{NATSURL: nats.DefaultURL, Listen: "127.0.0.1:9464",
		ID: id, Ollama: u, Slots: 1, InteractiveReserve: DefaultInteractiveReserve, FetchBytes: DefaultFetchBytes, Heartbeat: 3 * time.Second, Poll: time.Second, UnservedScan: 2 * time.Second,
		RetryDelay: 2 * time.Second, BreakerCooldown: 5 * time.Second, Grace: 30 * time.Second, Logger: slog.Default(),
		ColdAfter: DefaultColdAfter, ColdBacklog: DefaultColdBacklog, AffinityWait: DefaultAffinityWait}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case !job.ValidToken(c.ID) || strings.ContainsAny(c.ID, ":/\\"):
		return fmt.Errorf("worker: ID %q must be a token of letters, digits, '-' and '_'", c.ID)
	case c.Ollama == nil || c.Ollama.Host == "":
		return errors.New("worker: Ollama URL is required")
	case c.Slots < 1:
		return fmt.Errorf("worker: Slots must be at least 1, got %d", c.Slots)
	case c.InteractiveReserve < 0:
		return fmt.Errorf("worker: InteractiveReserve must not be negative, got %d", c.InteractiveReserve)
	case c.FetchBytes < 0:
		return fmt.Errorf("worker: FetchBytes must not be negative (0 is the default), got %d", c.FetchBytes)
	case c.Heartbeat <= 0 || c.Heartbeat > 5*time.Second:
		return fmt.Errorf("worker: Heartbeat must be in (0, 5s], got %s", c.Heartbeat)
	case c.Poll <= 0:
		return fmt.Errorf("worker: Poll must be positive, got %s", c.Poll)
	case c.UnservedScan <= 0:
		return fmt.Errorf("worker: UnservedScan must be positive, got %s", c.UnservedScan)
	case c.RetryDelay <= 0:
		return fmt.Errorf("worker: RetryDelay must be positive, got %s", c.RetryDelay)
	case c.BreakerCooldown <= 0:
		return fmt.Errorf("worker: BreakerCooldown must be positive, got %s", c.BreakerCooldown)
	case c.ColdAfter < 0 || c.ColdBacklog < 0 || c.StarveAfter < 0:
		return fmt.Errorf("worker: ColdAfter, ColdBacklog and StarveAfter must not be negative, got %s, %d, %s", c.ColdAfter, c.ColdBacklog, c.StarveAfter)
	case c.AffinityWait < 0:
		return fmt.Errorf("worker: AffinityWait must not be negative, got %s", c.AffinityWait)
	case c.Grace < 0:
		return fmt.Errorf("worker: Grace must not be negative, got %s", c.Grace)
	case c.Logger == nil:
		return errors.New("worker: Logger is required")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("worker: Listen %q: %w", c.Listen, err)
		}
	}
	return nil
}

// Worker serves jobs for one Ollama. Create it with New and call Run once.
type Worker struct {
	cfg    Config
	nc     *nats.Conn
	q      *queue.Queue
	ollama *ollama.Client
	log    *slog.Logger
	tracer *tracing.Tracer // nil: off

	wake     chan struct{} // new work may be queued; capacity 1
	released chan struct{} // a slot became free, or the slots changed; capacity 1
	refresh  chan struct{} // re-check Ollama now; capacity 1
	// recordNow asks for a check at once, answered with the node record's
	// revision (recordChange); maintained is closed when nobody answers.
	recordNow  chan chan uint64
	maintained chan struct{}

	metrics *metrics

	busy, peak       atomic.Int64
	busyLow          atomic.Int64 // of busy, the jobs of the lanes below interactive (reserve.go)
	slots            atomic.Int64 // Config.Slots, or what a reload set (reload.go)
	reserve          atomic.Int64 // Config.InteractiveReserve, or what a reload set
	grace            atomic.Int64 // Config.Grace, likewise, in nanoseconds
	jobsDone, failed atomic.Int64
	slotsChanged     atomic.Bool // the node record is behind on slots or counts

	mu         sync.Mutex
	served     map[consumerKey]jetstream.Consumer // the consumers of the models Ollama has
	bells      map[consumerKey]*nats.Subscription // their doorbells
	healthy    bool
	breaker    breaker
	draining   bool
	inventory  ollama.Inventory
	lastErr    string
	running    map[string]*task          // in-flight jobs by ID
	canceled   cancels                   // jobs canceled by their requester before they ran here
	reconnects reconnects                // when the connection last came back (liveness.go)
	gone       goneRequesters            // requesters found gone (liveness.go)
	heldOff    map[consumerKey]time.Time // models not to pull until then (passon.go)
	left       leftJobs                  // jobs handed back for their preferred worker (affinity.go)
	labels     map[string]string         // Config.Labels, or what a reload set; replaced, never changed
	counts     map[string]fleet.Counts   // by model, for the node record (tally.go)
	started    time.Time

	peers *peers // the other workers' records, while a job needs them

	waiting *waiting // the interactive jobs waiting, from their doorbells (position.go)

	// Warm-first scheduling (warm.go), guarded by mu.
	jobs     map[jetstream.Msg]startedRun // the jobs holding a slot
	inModel  map[string]int               // how many of them are for each model
	loading  int                          // how many of them made Ollama load their model
	stream   jetstream.Stream             // the job stream, bound on first use
	coldNext time.Time                    // when a cold model's oldest job comes of age; zero: none waits
}

type consumerKey struct {
	model string
	class job.Class
}

// New returns a worker that uses nc and the queue q.
func New(nc *nats.Conn, q *queue.Queue, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, nc: nc, q: q, ollama: ollama.New(cfg.Ollama), log: cfg.Logger.With("worker", cfg.ID), tracer: tracing.New(cfg.Tracer),
		wake:       make(chan struct{}, 1),
		released:   make(chan struct{}, 1),
		refresh:    make(chan struct{}, 1),
		recordNow:  make(chan chan uint64),
		maintained: make(chan struct{}),
		served:     make(map[consumerKey]jetstream.Consumer),
		bells:      make(map[consumerKey]*nats.Subscription),
		running:    make(map[string]*task),
		heldOff:    make(map[consumerKey]time.Time),
		left:       make(leftJobs),
		started:    time.Now(),
		peers:      newPeers(),
		jobs:       make(map[jetstream.Msg]startedRun),
		inModel:    make(map[string]int),
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry() // Registered, never served.
	}
	w.metrics = newMetrics(reg, w)
	w.waiting = newWaiting(reg, maxWaiting)
	if w.tracer.On() {
		w.ollama.Header = func(ctx context.Context, h http.Header) { w.tracer.Inject(ctx, tracing.HTTPHeader(h)) }
	}
	w.slots.Store(int64(cfg.Slots))
	w.reserve.Store(int64(cfg.InteractiveReserve))
	w.grace.Store(int64(cfg.Grace))
	w.labels = cfg.Labels
	return w, nil
}

// isHealthy reports whether Ollama answered the last check and is not
// failing jobs.
func (w *Worker) isHealthy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthy && !w.breaker.open(time.Now())
}

// jobWentOK feeds the circuit breaker with how a job went on Ollama's side.
func (w *Worker) jobWentOK(ok bool, reason string) {
	w.mu.Lock()
	opened := w.breaker.record(ok, reason, w.cfg.BreakerCooldown, time.Now())
	until, why := w.breaker.openUntil, w.breaker.reason
	w.mu.Unlock()
	if opened {
		w.log.Warn("not pulling jobs for a while: ollama keeps failing them", "until", until.Format(time.RFC3339), "why", why)
		w.slotsChanged.Store(true) // Let the node record say so soon.
	}
}

// Ready reports whether the worker can serve: NATS connected and Ollama
// answering. It is for readiness probes.
func (w *Worker) Ready() error {
	if !w.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.healthy {
		return fmt.Errorf("ollama at %s does not answer: %s", w.cfg.Ollama, w.lastErr)
	}
	if w.breaker.open(time.Now()) {
		return fmt.Errorf("ollama at %s is failing jobs: %s", w.cfg.Ollama, w.breaker.reason)
	}
	return nil
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run serves jobs until ctx is done, then drains: it stops pulling, lets
// in-flight jobs finish within Grace, hands the rest back to the queue, and
// removes its node record. It returns nil after a clean drain.
func (w *Worker) Run(ctx context.Context) error {
	defer w.silenceBells()
	cancels, err := w.nc.Subscribe(job.CancelPrefix+".>", w.onCancel)
	if err != nil {
		return fmt.Errorf("subscribe cancels: %w", err)
	}
	defer func() { _ = cancels.Unsubscribe() }()
	commands := make(chan *nats.Msg)
	cmdSub, err := w.nc.Subscribe(job.NodeSubject(w.cfg.ID), func(m *nats.Msg) {
		select {
		case commands <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe node commands: %w", err)
	}
	defer func() { _ = cmdSub.Unsubscribe() }()
	// Commands carry bodies as large as jobs: those waiting for the loop
	// below are bounded like a pull.
	if err := cmdSub.SetPendingLimits(64, int(w.fetchBytes())); err != nil {
		return fmt.Errorf("subscribe node commands: %w", err)
	}

	// Jobs outlive ctx by up to Grace, so they get their own context.
	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopJobs()
	var jobs sync.WaitGroup

	w.check(ctx) // Know the models before the first pull.
	w.log.Info("worker started", "ollama", w.cfg.Ollama.String(), "slots", w.slots.Load())

	var loops sync.WaitGroup
	loops.Go(func() { w.maintain(ctx) })
	loops.Go(func() { w.reap(ctx) })
	loops.Go(func() { w.scanUnserved(ctx) })
	loops.Go(func() { w.peers.run(ctx, w.q.Nodes(), w.log) })
	loops.Go(func() { w.reportPositions(ctx) })
	loops.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-commands:
				jobs.Go(func() { w.command(jobsCtx, m) })
			}
		}
	})
	w.schedule(ctx, func(m jetstream.Msg) {
		jobs.Go(func() { w.run(jobsCtx, m) })
	})
	loops.Wait()

	w.drain(ctx, &jobs, stopJobs)
	return nil
}

// drain waits for in-flight jobs for up to Grace, then cancels the rest, which
// hands them back to the queue, and removes the node record.
func (w *Worker) drain(ctx context.Context, jobs *sync.WaitGroup, stopJobs context.CancelFunc) {
	w.mu.Lock()
	w.draining = true
	w.mu.Unlock()
	// Bounded, detached context: the run context is done, but the bucket should still hear.
	kvCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	w.putNode(kvCtx)
	cancel()
	done := make(chan struct{})
	go func() { jobs.Wait(); close(done) }()
	grace := time.Duration(w.grace.Load())
	if n := w.busy.Load(); n > 0 {
		w.log.Info("draining", "jobs", n, "grace", grace)
	}
	select {
	case <-done:
	case <-time.After(grace):
		w.log.Warn("grace period over; handing unfinished jobs back to the queue", "jobs", w.busy.Load())
		stopJobs()
		<-done
	}
	kvCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := w.q.Nodes().Delete(kvCtx, fleet.Key(w.cfg.ID)); err != nil {
		w.log.Warn("remove node record", "err", err)
	}
	w.log.Info("worker stopped", "jobs_done", w.jobsDone.Load(), "jobs_failed", w.failed.Load())
}

// silenceBells unsubscribes the doorbells of the served models.
func (w *Worker) silenceBells() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, b := range w.bells {
		_ = b.Unsubscribe() // The connection may already be closed; nothing to undo then.
		delete(w.bells, k)
	}
}

// onCancel records a requester's cancel and stops the job if it runs here.
// Only the requester that owns the reply subject can cancel: the cancel subject
// carries the same requester token as the job's reply subject.
func (w *Worker) onCancel(m *nats.Msg) {
	requester, id, err := job.ParseCancelSubject(m.Subject)
	if err != nil {
		return
	}
	w.waiting.cancel(requester, id) // Its requester withdraws a waiting job: no more reports.
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.running[id]; t != nil {
		if t.requester == requester {
			t.cancel(errCanceled)
		}
		return
	}
	w.canceled.add(requester+"."+id, time.Now().Add(cancelMemory))
}
