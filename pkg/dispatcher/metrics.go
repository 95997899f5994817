package dispatcher

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets suit LLM work: from a cached short answer to a long
// generation behind a model load.
var latencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// metrics are the dispatcher's Prometheus metrics.
type metrics struct {
	requests     *prometheus.CounterVec   // route, code
	latency      *prometheus.HistogramVec // route
	firstByte    *prometheus.HistogramVec // route
	submitted    *prometheus.CounterVec   // model, class
	resumed      prometheus.Counter
	stalled      prometheus.Counter
	repliesLost  prometheus.Counter
	refused      *prometheus.CounterVec // reason: unauthorized, forbidden, rate_limited, tenant_contended, tenant_full, tenant_wait
	heldSeconds  prometheus.Histogram
	tenantJobs   *prometheus.CounterVec // tenant
	tenantTokens *prometheus.CounterVec // tenant, type: prompt or completion
}

// maxTenantLabels bounds the tenant label's values: tenants beyond the first
// this many are counted as "_other".
const maxTenantLabels = 100

// tenantLabels hands out tenant label values, at most maxTenantLabels.
type tenantLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (t *tenantLabels) label(tenant string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[tenant] {
		return tenant
	}
	if len(t.seen) >= maxTenantLabels {
		return "_other"
	}
	if t.seen == nil {
		t.seen = map[string]bool{}
	}
	t.seen[tenant] = true
	return tenant
}

func newMetrics(reg prometheus.Registerer, q queueInfo) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ollamamax_http_request_duration_seconds",
			Help: "Time to answer an HTTP request in full (a streamed generation included).", Buckets: latencyBuckets}, []string{"route"}),
		firstByte: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ollamamax_http_time_to_first_token_seconds",
			Help:    "Time from a request's arrival to the first response bytes of its job, queue wait included: the client's time to first token.",
			Buckets: latencyBuckets}, []string{"route"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_jobs_submitted_total",
			Help: "Jobs this dispatcher queued."}, []string{"model", "class"}),
	}
	m.resumed = prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_http_streams_resumed_total",
		Help: "Responses whose worker died mid-stream and that another worker continued where the client's bytes ended."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_http_refused_total",
		Help: "Requests refused for their API key: unauthorized (401), forbidden (403), rate_limited (429); or by tenant fairness: tenant_contended (429, the tenant's held requests at their bound while other tenants are active), tenant_full (503, at the bound and alone), tenant_wait (503, held for the whole queue wait)."}, []string{"reason"})
	m.heldSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ollamamax_tenant_held_seconds",
		Help:    "Time requests were held at this dispatcher for their tenant's turn (tenant fairness) before they were queued or refused.",
		Buckets: latencyBuckets})
	m.tenantJobs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_tenant_jobs_total",
		Help: "Jobs this dispatcher queued, by the tenant of their API key (the first 100 tenants; the rest as _other)."}, []string{"tenant"})
	m.tenantTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_tenant_tokens_total",
		Help: "Tokens of this dispatcher's finished jobs as Ollama counted them, by tenant and type (prompt, completion)."}, []string{"tenant", "type"})
	for _, reason := range []string{"unauthorized", "forbidden", "rate_limited", "tenant_contended", "tenant_full", "tenant_wait"} {
		m.refused.WithLabelValues(reason)
	}
	m.stalled = prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_jobs_stalled_total",
		Help: "Started jobs whose worker fell silent (no reply, no heartbeat, for the stall bound), whose delivery the dispatcher NAKed for another worker."})
	m.repliesLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_jobs_replies_lost_total",
		Help: "Started jobs some of whose replies NATS lost on the way (a reconnect), whose delivery the dispatcher NAKed so that another worker continues the answer from what it has."})
	reg.MustRegister(m.stalled, m.repliesLost, m.heldSeconds)
	reg.MustRegister(m.requests, m.latency, m.firstByte, m.submitted, m.resumed, m.refused, m.tenantJobs, m.tenantTokens)
	if q != nil {
		reg.MustRegister(&queueCollector{q: q})
	}
	return m
}

// observe wraps the API so each request is counted by its route pattern.
func (m *metrics) observe(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_, route := mux.Handler(r)
		if route == "" {
			route = "unmatched"
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		m.requests.WithLabelValues(route, strconv.Itoa(sw.statusOr200())).Inc()
		m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// statusWriter records the status; it passes flushes through for streaming.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) statusOr200() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// queueInfo is what the queue collector reads: JetStream itself.
type queueInfo interface {
	JetStream() jetstream.JetStream
}

// queueCollector reads queue depth and the oldest job's age per model and
// class from JetStream at scrape time, so they are facts, not estimates.
type queueCollector struct{ q queueInfo }

var (
	queueJobsDesc = prometheus.NewDesc("ollamamax_queue_jobs",
		"Jobs in the queue by model, class and state: waiting (not yet taken) or running (taken, not yet acknowledged).",
		[]string{"model", "class", "state"}, nil)
	queueAgeDesc = prometheus.NewDesc("ollamamax_queue_oldest_job_age_seconds",
		"Age of the oldest job in the stream for a model and class, waiting or running; 0 when there is none.",
		[]string{"model", "class"}, nil)
	queueUpDesc = prometheus.NewDesc("ollamamax_queue_up", "1 when the last scrape could read the queue from JetStream.", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueJobsDesc
	ch <- queueAgeDesc
	ch <- queueUpDesc
}

// Collect is called by a scrape, which carries no context: it bounds its own
// JetStream round trips.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	up := 1.0
	if err := c.collect(ctx, ch); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, up)
}

func (c *queueCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	js := c.q.JetStream()
	stream, err := js.Stream(ctx, job.Stream)
	if err != nil {
		return err
	}
	consumers := stream.ListConsumers(ctx)
	for info := range consumers.Info() {
		model, class, _, err := job.ParseJobSubject(info.Config.FilterSubject)
		if err != nil {
			continue // Not one of ours.
		}
		ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(info.NumPending), model, string(class), "waiting")
		ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(info.NumAckPending), model, string(class), "running")
		age := 0.0
		if info.NumPending+uint64(info.NumAckPending) > 0 {
			msg, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(info.Config.FilterSubject))
			if err == nil {
				age = time.Since(msg.Time).Seconds()
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return err
			}
		}
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, age, model, string(class))
	}
	if err := consumers.Err(); err != nil {
		return err
	}
	return nil
}
