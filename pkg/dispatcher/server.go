package dispatcher

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// APIVersion is the Ollama API version the dispatcher reports when no worker
// is up to tell its Ollama's version: the version of the Ollama module
// OllamaMax is built and tested against (go.mod; a test holds them equal).
const APIVersion = "0.32.15"

// Options configure the HTTP shim. Zero durations and sizes mean the
// defaults of DefaultOptions.
type Options struct {
	// MaxBody is the largest request body accepted, in bytes; larger ones get 413.
	MaxBody int64
	// BodyBudget bounds the bytes of large request bodies (over 64 KiB)
	// the dispatcher holds: being read, or queued and not yet started by a
	// worker. A request beyond it waits, unread, up to QueueWait for its
	// turn, then gets 503 (bodies.go). Zero is DefaultBodyBudget, negative
	// no bound; it is raised to MaxBody, so that any body fits.
	BodyBudget int64
	// QueueWait bounds how long a job waits for a worker to take it. After it,
	// the client gets 503 and the job is dropped from the queue.
	QueueWait time.Duration
	// MaxQueued bounds the interactive jobs waiting per model across the
	// fleet; a request beyond it waits QueueFullWait for room (or what its
	// Ollamaq-Queue-Full-Wait header asks), then gets 503. Requests of the
	// lower lanes are refused sooner (laneBound). Zero: no bound.
	MaxQueued     int
	QueueFullWait time.Duration
	// TenantWindow turns on per-tenant fairness (fairness.go) with API
	// keys: a tenant counts as active, and keeps its reservation of the
	// fleet's slots, for this long after its latest request. Zero is off:
	// every request goes to the queue at once, as before.
	TenantWindow time.Duration
	// TenantHeld bounds the requests per tenant and model held at the
	// dispatcher for their tenant's turn; beyond it a request gets 429
	// (other tenants are active) or 503 (the tenant is alone). Zero is
	// DefaultTenantHeld.
	TenantHeld int
	// CommandWait bounds how long a node command (show, pull, delete, copy)
	// waits for its worker to answer at all.
	CommandWait time.Duration
	// MaxSilence bounds how long an answer a worker started may go without a
	// reply message before it ends with an explicit error (504, or an error
	// line mid-stream) and the job is canceled. Loading a model can take
	// minutes before the first token.
	MaxSilence time.Duration
	// Stall is how long a started job may go without any reply message,
	// heartbeats included, before the dispatcher NAKs its delivery so that
	// another worker continues it at once (docs/protocol.md, "Heartbeats");
	// 0 means queue.DefaultStall, negative turns it off (failover then waits
	// for the ack wait).
	Stall time.Duration
	// Origins are extra CORS origins allowed besides Ollama's defaults, like
	// OLLAMA_ORIGINS (wildcards allowed, e.g. https://*.example.com).
	Origins []string
	// LoopbackOnly turns on Ollama's DNS-rebinding guard: requests whose Host
	// is not a local name get 403. Set it when listening on loopback.
	LoopbackOnly bool
	// Logger receives the log.
	Logger *slog.Logger
	// Metrics is where the dispatcher registers its Prometheus metrics, and
	// Gatherer what /metrics serves; nil Metrics registers them nowhere and a
	// nil Gatherer serves 404 on /metrics.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
	// Ready, if set, answers /readyz: nil when the dispatcher can serve.
	Ready func(context.Context) error
	// Keys, if set, are the HTTP API keys every route but /, /api/version,
	// /healthz and /readyz requires (access.go); Run must then be running
	// for the rate limits to count other dispatchers' requests. MACSecret
	// signs the key and tenant stated on each job (apikey.MACSecret).
	Keys      *apikey.Cache
	MACSecret []byte
	// Tracer, if set, traces the queued routes' requests and passes their
	// trace context on with their jobs (trace.go; tracing.Setup makes it
	// from the OTEL_* environment). Nil traces nothing, at no cost.
	Tracer trace.TracerProvider
}

// DefaultTenantHeld is the default of Options.TenantHeld.
const DefaultTenantHeld = 256

// DefaultOptions returns the defaults: 8 MiB bodies, two minutes' queue
// wait, 512 queued jobs per model, tenant fairness over 30 seconds with 256
// held requests per tenant and model, ten seconds for a node command, five
// minutes of silence in a started answer.
func DefaultOptions() Options {
	return Options{MaxBody: 8 << 20, QueueWait: 2 * time.Minute, MaxQueued: 512, TenantWindow: 30 * time.Second,
		TenantHeld: DefaultTenantHeld, CommandWait: 10 * time.Second, MaxSilence: 5 * time.Minute, Logger: slog.Default()}
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	switch {
	case o.MaxBody < 0:
		return fmt.Errorf("dispatcher: MaxBody must not be negative, got %d", o.MaxBody)
	case o.QueueWait != 0 && o.QueueWait < time.Second:
		return fmt.Errorf("dispatcher: QueueWait must be at least 1s, got %s", o.QueueWait)
	case o.MaxQueued < 0:
		return fmt.Errorf("dispatcher: MaxQueued must not be negative (0 is no bound), got %d", o.MaxQueued)
	case o.QueueFullWait < 0:
		return fmt.Errorf("dispatcher: QueueFullWait must not be negative, got %s", o.QueueFullWait)
	case o.TenantWindow < 0:
		return fmt.Errorf("dispatcher: TenantWindow must not be negative (0 is off), got %s", o.TenantWindow)
	case o.TenantHeld < 0:
		return fmt.Errorf("dispatcher: TenantHeld must not be negative, got %d", o.TenantHeld)
	case o.CommandWait < 0:
		return fmt.Errorf("dispatcher: CommandWait must not be negative, got %s", o.CommandWait)
	case o.MaxSilence < 0:
		return fmt.Errorf("dispatcher: MaxSilence must not be negative, got %s", o.MaxSilence)
	}
	return nil
}

// withDefaults fills the zero fields that have a default (MaxQueued 0 is
// no bound, not a default).
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.MaxBody = cmp.Or(o.MaxBody, d.MaxBody)
	if o.BodyBudget >= 0 {
		o.BodyBudget = max(cmp.Or(o.BodyBudget, DefaultBodyBudget), o.MaxBody)
	}
	o.QueueWait = cmp.Or(o.QueueWait, d.QueueWait)
	o.TenantHeld = cmp.Or(o.TenantHeld, d.TenantHeld)
	o.CommandWait = cmp.Or(o.CommandWait, d.CommandWait)
	o.MaxSilence = cmp.Or(o.MaxSilence, d.MaxSilence)
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	return o
}

// Server is the HTTP shim. It is an http.Handler.
type Server struct {
	opts    Options              // as NewServer got them; the fields a reload changes are read from cur
	cur     atomic.Pointer[live] // the settings a reload changes (reload.go)
	q       *queue.Queue
	req     *queue.Requester
	view    *fleet.View
	log     *slog.Logger
	mux     *http.ServeMux
	router  router
	handler http.Handler
	metrics *metrics
	depth   pendingCache
	fair    fairness
	limits  *limiter // nil without keys
	bodies  *bodyBudget
	tenants tenantLabels
	tracer  *tracing.Tracer // nil: off
	// queuedRoutes are the ServeMux patterns of the queued routes, which
	// are traced, with their paths.
	queuedRoutes map[string]string

	// affinity remembers which worker served each session's last turn
	// (affinity.go).
	affinity *affinity

	// named are the waiting requests that named themselves (position.go).
	named namedRequests
}

// NewServer returns the HTTP shim over the queue, submitting through req and
// answering model listings from view. It fails on invalid options.
func NewServer(q *queue.Queue, req *queue.Requester, view *fleet.View, o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	s := &Server{opts: o, q: q, req: req, view: view, log: o.Logger, mux: http.NewServeMux(),
		tracer: tracing.New(o.Tracer), queuedRoutes: map[string]string{}}
	s.cur.Store(newLive(o))
	s.fair.slots = readySlots(view)
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry() // Registered, never served.
	}
	s.metrics = newMetrics(reg, q)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_tenant_held_requests",
		Help: "Requests held at this dispatcher for their tenant's turn (tenant fairness), not yet queued."},
		func() float64 { return float64(s.fair.heldNow()) }))
	s.bodies = newBodyBudget(o.BodyBudget, reg)
	s.affinity = newAffinity(reg, affinitySize, affinityTTL)
	s.setStall(o.Stall)
	if o.Keys != nil {
		if len(o.MACSecret) < 32 {
			return nil, errors.New("dispatcher: API keys need a MAC secret of at least 32 bytes (apikey.MACSecret)")
		}
		var err error
		if s.limits, err = newLimiter(q.JetStream().Conn(), o.Keys, req.ID(), o.Logger); err != nil {
			return nil, err
		}
	}
	get := func(p string, h http.HandlerFunc) { s.handle(http.MethodGet, p, h) }
	getHead := func(p string, h http.HandlerFunc) { get(p, h); s.handle(http.MethodHead, p, h) }
	getHead("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	getHead("/readyz", s.handleReady)
	get(PositionPath, s.handlePosition)
	if o.Gatherer != nil {
		get("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	}
	// HEAD only where Ollama serves it (Route.Head): a GET route of the
	// ServeMux also serves HEAD, Ollama's others answer HEAD with 405.
	getHead("/", s.handleRoot)
	byPath := map[string]http.HandlerFunc{
		"/api/version": s.handleVersion, "/api/tags": s.handleTags, "/api/ps": s.handlePS,
		"/v1/models": s.handleOpenAIModels, "/v1/models/{model}": s.handleOpenAIModel,
		"/api/show": s.handleShow, "/api/pull": s.audited("pull", s.handlePull),
		"/api/delete": s.audited("delete", s.handleDelete), "/api/copy": s.audited("copy", s.handleCopy),
	}
	for _, rt := range job.Routes() {
		h := byPath[rt.Path]
		switch {
		case rt.Serve == job.Queued:
			h = s.handleJob(rt.Path, formatOf(rt.Path))
			s.queuedRoutes[rt.Method+" "+rt.Path] = rt.Path
		case rt.Serve == job.Node && rt.ModelField == "":
			h = s.handleNodeRoute(rt)
		case rt.Serve == job.Refused:
			h = s.handleRefused
		case rt.Serve == job.Removed:
			continue // Not registered: they answer 404, as current Ollama.
		}
		if h == nil {
			return nil, fmt.Errorf("dispatcher: no handler for %s %s", rt.Method, rt.Path) // A programming error.
		}
		s.handle(rt.Method, rt.Path, h)
		if rt.Head {
			s.handle(http.MethodHead, rt.Path, h)
		}
	}
	s.handler = s.metrics.observe(s.mux, s.traced(s.ginRoute(s.cors(s.guardHost(s.withRequestID(http.HandlerFunc(s.route)))))))
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// LimitsReady is closed once Run has replayed the rate-limit charges of the
// last minute, so the buckets hold what every dispatcher spent; at once
// without Options.Keys.
func (s *Server) LimitsReady() <-chan struct{} {
	if s.limits == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.limits.ready
}

// Run follows the other dispatchers' rate-limit charges until ctx is done;
// without Options.Keys it returns at once.
func (s *Server) Run(ctx context.Context) error {
	if s.limits == nil {
		return nil
	}
	return s.limits.run(ctx)
}

// handle serves h on method and path (ServeMux wildcards of one segment).
// HEAD of a GET route is left to the ServeMux's GET pattern, which serves
// HEAD too: the router says which of them Ollama has.
func (s *Server) handle(method, path string, h http.HandlerFunc) {
	if !(method == http.MethodHead && s.router.match(http.MethodGet, path)) {
		pattern := path
		if path == "/" {
			pattern = "/{$}" // "/" alone would match every path.
		}
		s.mux.HandleFunc(method+" "+pattern, h)
	}
	s.router.add(method, path)
}

// route serves a request that ginRoute let through: its handler, after the
// key check, or gin's plain-text 405 (ginRoute set Allow) or 404, which is
// what Ollama sends.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if s.router.match(r.Method, r.URL.Path) {
		r, ok := s.authenticate(w, r)
		if ok {
			s.mux.ServeHTTP(w, r)
		}
		return
	}
	if len(s.router.allowed(r.Method, r.URL.Path)) > 0 {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, "405 method not allowed") // A failed write means the client left.
		return
	}
	notFound(w)
}

// withRequestID gives every response an X-Request-Id; job routes replace it
// with the job ID, which also names the job in the logs.
func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", job.NewID())
		next.ServeHTTP(w, r)
	})
}

// handleReady answers readiness probes: 200 when the queue is reachable.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.q.JetStream().Stream(ctx, job.Stream); err != nil {
		http.Error(w, "queue unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n") // A failed write means the client left.
}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "Ollama is running") // A failed write means the client left.
	}
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	v := s.view.OllamaVersion()
	if v == "" {
		v = APIVersion
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": v})
}

// handleRefused answers routes that cannot mean anything for a fleet.
func (s *Server) handleRefused(w http.ResponseWriter, r *http.Request) {
	why := "create, push and upload models on each worker's Ollama, then use /api/pull or /api/copy through OllamaMax to spread them"
	if r.URL.Path == "/api/me" || r.URL.Path == "/api/signout" || strings.HasPrefix(r.URL.Path, "/api/user/") {
		why = "each worker's Ollama has its own ollama.com account: sign it in or out on the worker's machine (ollama signin, ollama signout)"
	}
	writeError(w, http.StatusNotImplemented, fmt.Sprintf("%s is not supported by OllamaMax: %s (see docs/api.md)", r.URL.Path, why))
}

// writeJSON writes v the way Ollama's gin handlers do (c.JSON), keeping a
// Content-Type the handler already set.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, job.ErrorBody("encode response: "+err.Error())
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b) // A failed write means the client left.
}

// writeError writes Ollama's error shape with status, keeping a Content-Type
// the handler already set.
func writeError(w http.ResponseWriter, status int, msg string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write(job.ErrorBody(msg)) // A failed write means the client left.
}

// readBody reads a request body of at most max bytes. It writes the error
// response itself (with f's error shape) and returns ok=false when the body
// is missing or too large.
func readBody(w http.ResponseWriter, r *http.Request, max int64, f format) ([]byte, bool) {
	body, err := readAll(http.MaxBytesReader(w, r.Body, max), min(r.ContentLength, max))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		f.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit is %d bytes", max))
		return nil, false
	case err != nil:
		f.fail(w, http.StatusBadRequest, "read request body: "+err.Error())
		return nil, false
	case len(bytes.TrimSpace(body)) == 0 && f == native:
		writeError(w, http.StatusBadRequest, "missing request body")
		return nil, false
	}
	return body, true
}

// readRequest reads a native request body and decodes it into a T as
// Ollama does, writing the error response itself when it cannot.
func readRequest[T any](w http.ResponseWriter, r *http.Request, max int64) ([]byte, T, bool) {
	var req T
	body, ok := readBody(w, r, max, native)
	if !ok {
		return nil, req, false
	}
	if err := decode(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, req, false
	}
	return body, req, true
}

// decode parses body into v as Ollama does (gin's ShouldBindJSON), so a client
// gets the same error text for malformed JSON and wrong field types.
func decode(body []byte, v any) error {
	return json.NewDecoder(bytes.NewReader(body)).Decode(v)
}
