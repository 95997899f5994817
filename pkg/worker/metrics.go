package worker

import "github.com/prometheus/client_golang/prometheus"

// LatencyBuckets suit LLM work: from a cached short answer to a long
// generation behind a model load.
var LatencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// metrics are the worker's Prometheus metrics. Labels: model (canonical
// name) and class.
type metrics struct {
	completed, failed, canceled, retried, redelivered *prometheus.CounterVec
	deadLettered, migrated, passedOn, leftToPreferred *prometheus.CounterVec
	queueWait                                         *prometheus.HistogramVec
	firstToken, duration                              *prometheus.HistogramVec
	tokens                                            *prometheus.CounterVec
	tokensPerSecond                                   *prometheus.HistogramVec
	loads                                             *prometheus.CounterVec
	auditFailures                                     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *Worker) *metrics {
	mc := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"model", "class"})
	}
	mh := func(name, help string, labels []string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	m := &metrics{
		completed:   mc("ollamamax_worker_jobs_completed_total", "Jobs relayed in full and acknowledged."),
		failed:      mc("ollamamax_worker_jobs_failed_total", "Jobs ended with an error to the requester (terminated, not retried)."),
		canceled:    mc("ollamamax_worker_jobs_canceled_total", "Jobs stopped because their requester canceled them."),
		retried:     mc("ollamamax_worker_jobs_retried_total", "Jobs handed back to the queue after a transient Ollama failure, or by a stopping worker."),
		redelivered: mc("ollamamax_worker_job_redeliveries_total", "Deliveries of jobs that had been delivered before (a worker died or handed them back)."),
		migrated: mc("ollamamax_worker_jobs_migrated_total",
			"Jobs this worker continued from where a worker that died mid-stream left off."),
		passedOn: mc("ollamamax_worker_jobs_passed_on_total",
			"Deliveries handed back for a worker whose Ollama has the job's route, which this worker's lacks."),
		leftToPreferred: mc("ollamamax_worker_jobs_left_to_preferred_total",
			"First deliveries handed back for the worker that served the previous turn of their session (session affinity), which had a free slot."),
		deadLettered: mc("ollamamax_worker_jobs_dead_lettered_total",
			"Jobs moved to OLLAMAQ_DLQ: malformed, out of deliveries, or (by the reaper) left unsettled by dead workers."),
		queueWait: mh("ollamamax_worker_job_queue_wait_seconds", "Time from a job's arrival in the stream to a worker taking it.",
			[]string{"model", "class"}, LatencyBuckets),
		firstToken: mh("ollamamax_worker_job_time_to_first_token_seconds", "Time from sending a job to Ollama to its first response bytes.",
			[]string{"model", "class"}, LatencyBuckets),
		duration: mh("ollamamax_worker_job_duration_seconds", "Time from taking a job to settling it.",
			[]string{"model", "class"}, LatencyBuckets),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_worker_tokens_generated_total",
			Help: "Tokens generated, as Ollama counted them (eval_count, or usage.completion_tokens on OpenAI routes)."}, []string{"model"}),
		tokensPerSecond: mh("ollamamax_worker_generation_tokens_per_second", "Generation speed per job, eval_count / eval_duration as Ollama measured them.",
			[]string{"model"}, []float64{1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_worker_model_loads_total",
			Help: "Jobs this worker started for a model its Ollama did not have loaded, each of which makes Ollama load it."}, []string{"model"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_worker_audit_failures_total",
			Help: "Audit records of ended jobs the worker could not write to OLLAMAQ_AUDIT (the jobs were settled all the same)."}),
	}
	reg.MustRegister(m.completed, m.failed, m.canceled, m.retried, m.redelivered, m.deadLettered, m.migrated, m.passedOn, m.leftToPreferred, m.queueWait, m.firstToken, m.duration,
		m.tokens, m.tokensPerSecond, m.loads, m.auditFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_worker_slots", Help: "Jobs this worker runs at once.",
			ConstLabels: prometheus.Labels{"state": "total"}}, func() float64 { return float64(w.slots.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_worker_slots", Help: "Jobs this worker runs at once.",
			ConstLabels: prometheus.Labels{"state": "busy"}}, func() float64 { return float64(w.busy.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_worker_ollama_up", Help: "1 when this worker's Ollama answers."},
			func() float64 {
				if w.isHealthy() {
					return 1
				}
				return 0
			}),
	)
	return m
}

// initialize creates the series of a model and class at zero, so that a
// rate() over them works from the start and dashboards see every counter.
func (m *metrics) initialize(model string, class string) {
	for _, c := range []*prometheus.CounterVec{m.completed, m.failed, m.canceled, m.retried, m.redelivered, m.deadLettered, m.migrated, m.passedOn, m.leftToPreferred} {
		c.WithLabelValues(model, class)
	}
	m.tokens.WithLabelValues(model)
	m.loads.WithLabelValues(model)
}
