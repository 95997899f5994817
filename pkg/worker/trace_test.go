package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestWorkerTakesOnlyW3CTraceContextFromAJob publishes jobs as any NATS
// client can, with trace headers of every shape, to a traced worker: it
// continues a trace only from one well-formed lower-case traceparent,
// passes Ollama at most 512 bytes of tracestate, and otherwise starts a
// trace of its own.
func TestWorkerTakesOnlyW3CTraceContextFromAJob(t *testing.T) {
	const (
		traceID = "0af7651916cd43dd8448eb211c80319c"
		spanID  = "b7ad6b7169203331"
		parent  = "00-" + traceID + "-" + spanID + "-01"
	)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var (
		mu  sync.Mutex
		saw []http.Header
	)
	f := fleettest.Start(t, fleettest.Options{Workers: 1, WorkerTracer: tp, Ollama: func(_ int, sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				mu.Lock()
				saw = append(saw, r.Header.Clone())
				mu.Unlock()
			}
			sim.ServeHTTP(w, r)
		})
	}})
	var long []string
	for i := range 30 {
		long = append(long, fmt.Sprintf("m%d=%s", i, strings.Repeat("z", 40)))
	}
	cases := []struct {
		name    string
		headers nats.Header
		parent  bool // the run continues the job's trace
		state   string
	}{
		{"traceparent", nats.Header{"traceparent": {parent}}, true, ""},
		{"long tracestate", nats.Header{"traceparent": {parent}, "tracestate": {strings.Join(long, ",")}}, true, "cut"},
		{"tracestate in two values", nats.Header{"traceparent": {parent}, "tracestate": {"a=1", "b=2"}}, true, "a=1,b=2"},
		{"two traceparents", nats.Header{"traceparent": {parent, parent}}, false, ""},
		{"capitalised header", nats.Header{"Traceparent": {parent}}, false, ""},
		{"version ff", nats.Header{"traceparent": {"ff" + parent[2:]}}, false, ""},
		{"no trace context", nats.Header{}, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exp.Reset()
			mu.Lock()
			before := len(saw)
			mu.Unlock()
			id := job.NewID()
			reply := job.ReplySubject("native", id)
			sub, err := f.NC.SubscribeSync(reply)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			m := nats.NewMsg(job.JobSubject("llama3.2:latest", job.Interactive, "native"))
			m.Header = c.headers
			m.Header.Set(job.HeaderJob, id)
			m.Header.Set(job.HeaderRoute, "/api/generate")
			m.Header.Set(job.HeaderReply, reply)
			m.Data = []byte(`{"model":"llama3.2","prompt":"hi","stream":false}`)
			if _, err := f.Queue.JetStream().PublishMsg(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			for {
				rm, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if r, err := job.ParseReply(rm.Header, rm.Data); err == nil && (r.Kind == job.KindDone || r.Kind == job.KindError) {
					if r.Kind == job.KindError {
						t.Fatalf("job failed: %s", r.Error)
					}
					break
				}
			}
			fleettest.WaitFor(t, 10*time.Second, "the run's span", func() bool {
				for _, s := range exp.GetSpans() {
					if s.Name == "worker.run" {
						return true
					}
				}
				return false
			})
			var run, call tracetest.SpanStub
			for _, s := range exp.GetSpans() {
				switch s.Name {
				case "worker.run":
					run = s
				case "POST /api/generate":
					call = s
				}
			}
			if got := run.Parent.IsValid() && run.Parent.IsRemote() && run.Parent.SpanID().String() == spanID && run.SpanContext.TraceID().String() == traceID; got != c.parent {
				t.Errorf("run in trace %s with parent %s: continues the job's trace %v, want %v", run.SpanContext.TraceID(), run.Parent.SpanID(), got, c.parent)
			}
			if !c.parent && run.Parent.IsValid() {
				t.Errorf("run has parent %s, want a trace of its own", run.Parent.SpanID())
			}
			mu.Lock()
			h := saw[before:]
			mu.Unlock()
			if len(h) != 1 {
				t.Fatalf("Ollama got %d requests, want 1", len(h))
			}
			if got, want := h[0].Get("Traceparent"), fmt.Sprintf("00-%s-%s-01", run.SpanContext.TraceID(), call.SpanContext.SpanID()); got != want {
				t.Errorf("Ollama got traceparent %q, want the worker's request span's %q", got, want)
			}
			ts := h[0].Get("Tracestate")
			switch c.state {
			case "cut":
				if ts == "" || len(ts) > tracing.MaxTracestate {
					t.Errorf("Ollama got a tracestate of %d bytes, want 1 to %d", len(ts), tracing.MaxTracestate)
				}
			default:
				if ts != c.state {
					t.Errorf("Ollama got tracestate %q, want %q", ts, c.state)
				}
			}
		})
	}
}
