package dispatcher_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// traced is a fleet whose dispatcher and workers each record their spans
// in their own in-memory exporter, as separate processes would export
// them: nothing but the job's headers can carry a trace from one to the
// other. Its simulated Ollamas note the trace context of each request.
type traced struct {
	*fleettest.Fleet
	dispatcher, workers *tracetest.InMemoryExporter

	mu     sync.Mutex
	ollama []http.Header // trace headers of the requests Ollama got, in order
}

func startTraced(t *testing.T, o fleettest.Options, on bool) *traced {
	t.Helper()
	tf := &traced{dispatcher: tracetest.NewInMemoryExporter(), workers: tracetest.NewInMemoryExporter()}
	provider := func(exp *tracetest.InMemoryExporter) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	if on {
		o.Tracer, o.WorkerTracer = provider(tf.dispatcher), provider(tf.workers)
	}
	o.Ollama = func(_ int, sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				tf.mu.Lock()
				tf.ollama = append(tf.ollama, http.Header{"Traceparent": r.Header.Values("Traceparent"), "Tracestate": r.Header.Values("Tracestate")})
				tf.mu.Unlock()
			}
			sim.ServeHTTP(w, r)
		})
	}
	tf.Fleet = fleettest.Start(t, o)
	return tf
}

// ollamaSaw returns the trace headers of the requests Ollama got so far.
func (tf *traced) ollamaSaw() []http.Header {
	tf.mu.Lock()
	defer tf.mu.Unlock()
	return append([]http.Header(nil), tf.ollama...)
}

// spans are the ended spans of exp, by name.
func spans(exp *tracetest.InMemoryExporter) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		out[s.Name] = append(out[s.Name], s)
	}
	return out
}

// one returns the one span named name, failing the test otherwise.
func one(t *testing.T, by map[string][]tracetest.SpanStub, name string) tracetest.SpanStub {
	t.Helper()
	if len(by[name]) != 1 {
		t.Fatalf("%d spans %q, want 1 (spans: %v)", len(by[name]), name, names(by))
	}
	return by[name][0]
}

func names(by map[string][]tracetest.SpanStub) []string {
	var out []string
	for n, ss := range by {
		out = append(out, fmt.Sprintf("%s×%d", n, len(ss)))
	}
	return out
}

func attr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func hasEvent(s tracetest.SpanStub, name string) bool {
	for _, e := range s.Events {
		if e.Name == name {
			return true
		}
	}
	return false
}

// childOf fails the test unless child is a child of parent, in its trace.
func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.SpanContext.TraceID() != parent.SpanContext.TraceID() || child.Parent.SpanID() != parent.SpanContext.SpanID() {
		t.Errorf("%s (trace %s, parent %s) is not a child of %s (trace %s, span %s)", child.Name, child.SpanContext.TraceID(),
			child.Parent.SpanID(), parent.Name, parent.SpanContext.TraceID(), parent.SpanContext.SpanID())
	}
}

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan  = "00f067aa0ba902b7"
)

// TestOneTraceAcrossDispatcherAndWorker sends a chat request through a
// traced fleet and follows its trace from the HTTP request across NATS to
// the worker and on to Ollama: one trace, the client's traceparent only
// its parent, with admission and the queue wait as spans of their own, the
// worker's run a child of the request's span, and Ollama handed the
// traceparent of the worker's request to it, tracestate bounded. Without
// a traceparent the trace starts at the dispatcher; a malformed one is
// ignored.
func TestOneTraceAcrossDispatcherAndWorker(t *testing.T) {
	tf := startTraced(t, fleettest.Options{Workers: 1}, true)
	long := make([]string, 20)
	for i := range long {
		long[i] = fmt.Sprintf("v%d=%s", i, strings.Repeat("x", 60))
	}
	cases := []struct {
		name        string
		traceparent string
		tracestate  string
		fromClient  bool
	}{
		{name: "client traceparent", traceparent: "00-" + clientTrace + "-" + clientSpan + "-01", tracestate: strings.Join(long, ","), fromClient: true},
		{name: "no traceparent"},
		{name: "malformed traceparent", traceparent: "00-" + strings.ToUpper(clientTrace) + "-" + clientSpan + "-01"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tf.dispatcher.Reset()
			tf.workers.Reset()
			before := len(tf.ollamaSaw())
			req, _ := http.NewRequest(http.MethodPost, tf.URL+"/api/chat", strings.NewReader(`{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}`))
			if c.traceparent != "" {
				req.Header.Set("traceparent", c.traceparent)
				req.Header.Set("tracestate", c.tracestate)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"done":true`) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			jobID := resp.Header.Get("X-Request-Id")
			// The worker ends its span once it settled the job, which may be
			// just after the client has the answer.
			fleettest.WaitFor(t, 10*time.Second, "the worker's run span", func() bool { return len(spans(tf.workers)["worker.run"]) == 1 })
			fleettest.WaitFor(t, 10*time.Second, "the request's span", func() bool { return len(spans(tf.dispatcher)["POST /api/chat"]) == 1 })

			d, w := spans(tf.dispatcher), spans(tf.workers)
			request, admission, wait := one(t, d, "POST /api/chat"), one(t, d, "admission"), one(t, d, "queue.wait")
			run, call := one(t, w, "worker.run"), one(t, w, "POST /api/chat")
			tid := request.SpanContext.TraceID()
			switch {
			case c.fromClient:
				if tid.String() != clientTrace || request.Parent.SpanID().String() != clientSpan || !request.Parent.IsRemote() {
					t.Errorf("request span in trace %s with parent %s, want the client's %s/%s as its remote parent", tid, request.Parent.SpanID(), clientTrace, clientSpan)
				}
				if request.SpanContext.SpanID().String() == clientSpan {
					t.Error("the request span took the client's span ID")
				}
			default:
				if request.Parent.IsValid() || strings.EqualFold(tid.String(), clientTrace) {
					t.Errorf("request span in trace %s with parent %v, want a new trace", tid, request.Parent)
				}
			}
			if request.SpanKind != trace.SpanKindServer || attr(request, "http.response.status_code").AsInt64() != 200 || attr(request, tracing.AttrJob).AsString() != jobID {
				t.Errorf("request span kind %v, status %v, job %v; want server, 200, %s", request.SpanKind, attr(request, "http.response.status_code"), attr(request, tracing.AttrJob), jobID)
			}
			if !hasEvent(request, "first byte") {
				t.Error("the request span has no first byte event")
			}
			childOf(t, admission, request)
			childOf(t, wait, request)
			childOf(t, run, request) // Across NATS: the job's traceparent.
			childOf(t, call, run)
			if !run.Parent.IsRemote() {
				t.Error("the worker's run has a parent that is not remote: it did not come from the job's headers")
			}
			// The queue wait follows admission and lasts until the worker
			// took the job and said so.
			if wait.StartTime.Before(admission.EndTime) || run.StartTime.Before(wait.StartTime) || wait.EndTime.Before(run.StartTime) {
				t.Errorf("admission %s–%s, queue wait %s–%s, run from %s: out of order",
					admission.StartTime.Format(time.StampMicro), admission.EndTime.Format(time.StampMicro),
					wait.StartTime.Format(time.StampMicro), wait.EndTime.Format(time.StampMicro), run.StartTime.Format(time.StampMicro))
			}
			if attr(wait, tracing.AttrWorker).AsString() != "w0" || attr(wait, tracing.AttrAttempt).AsInt64() != 1 {
				t.Errorf("queue wait ended by worker %v attempt %v, want w0 and 1", attr(wait, tracing.AttrWorker), attr(wait, tracing.AttrAttempt))
			}
			if attr(run, tracing.AttrJob).AsString() != jobID || attr(run, tracing.AttrOutcome).AsString() != "done" || attr(run, tracing.AttrModel).AsString() != "llama3.2:latest" {
				t.Errorf("run span job %v outcome %v model %v, want %s, done, llama3.2:latest", attr(run, tracing.AttrJob), attr(run, tracing.AttrOutcome), attr(run, tracing.AttrModel), jobID)
			}
			if !hasEvent(run, "first token") || run.SpanKind != trace.SpanKindConsumer || call.SpanKind != trace.SpanKindClient {
				t.Errorf("run span kind %v events %v, Ollama call kind %v: want a consumer with a first token event and a client", run.SpanKind, run.Events, call.SpanKind)
			}

			saw := tf.ollamaSaw()[before:]
			if len(saw) != 1 {
				t.Fatalf("Ollama got %d traced requests, want 1", len(saw))
			}
			want := fmt.Sprintf("00-%s-%s-01", tid, call.SpanContext.SpanID())
			if got := saw[0].Values("Traceparent"); len(got) != 1 || got[0] != want {
				t.Errorf("Ollama got traceparent %q, want %q: the worker's request to it", got, want)
			}
			ts := strings.Join(saw[0].Values("Tracestate"), ",")
			switch {
			case c.fromClient && (ts == "" || len(ts) > tracing.MaxTracestate || !strings.HasPrefix(c.tracestate, ts)):
				t.Errorf("Ollama got tracestate %q (%d bytes), want the client's %d bytes cut to at most %d", ts, len(ts), len(c.tracestate), tracing.MaxTracestate)
			case !c.fromClient && ts != "":
				t.Errorf("Ollama got tracestate %q, want none", ts)
			}
		})
	}
}

// TestUntracedFleetPassesNoTraceOn: with tracing off, a client's
// traceparent goes nowhere: not into the job, not to Ollama.
func TestUntracedFleetPassesNoTraceOn(t *testing.T) {
	tf := startTraced(t, fleettest.Options{Workers: 1}, false)
	req, _ := http.NewRequest(http.MethodPost, tf.URL+"/api/generate", strings.NewReader(`{"model":"llama3.2","prompt":"hi","stream":false}`))
	req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	saw := tf.ollamaSaw()
	if len(saw) != 1 {
		t.Fatalf("Ollama got %d requests, want 1", len(saw))
	}
	if tp := saw[0].Values("Traceparent"); len(tp) != 0 {
		t.Errorf("untraced, Ollama got traceparent %q", tp)
	}
}

// TestRefusedRequestIsTracedAsRefusedAdmission: a request refused at
// admission (no API key) has its request span and an admission span that
// says why, and nothing queued.
func TestRefusedRequestIsTracedAsRefusedAdmission(t *testing.T) {
	tf := startTraced(t, fleettest.Options{Workers: 1, Keys: true}, true)
	_, secret := tf.CreateKey(apikey.Key{Name: "k", Tenant: "acme", Role: apikey.User})
	for _, c := range []struct {
		name   string
		key    string
		status int
	}{{"no key", "", http.StatusUnauthorized}, {"key", secret, http.StatusOK}} {
		t.Run(c.name, func(t *testing.T) {
			tf.dispatcher.Reset()
			req, _ := http.NewRequest(http.MethodPost, tf.URL+"/api/generate", strings.NewReader(`{"model":"llama3.2","prompt":"hi","stream":false}`))
			if c.key != "" {
				req.Header.Set("Authorization", "Bearer "+c.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			fleettest.WaitFor(t, 10*time.Second, "the request's span", func() bool { return len(spans(tf.dispatcher)["POST /api/generate"]) == 1 })
			d := spans(tf.dispatcher)
			request, admission := one(t, d, "POST /api/generate"), one(t, d, "admission")
			childOf(t, admission, request)
			if got := attr(request, "http.response.status_code").AsInt64(); got != int64(c.status) {
				t.Errorf("request span status code %d, want %d", got, c.status)
			}
			refused := admission.Status.Code == codes.Error
			if refused != (c.status != http.StatusOK) || request.Status.Code == codes.Error {
				t.Errorf("admission status %v, request status %v: want admission refused only for the %d, and a 4xx no server error", admission.Status, request.Status, c.status)
			}
			if queued := len(d["queue.wait"]) > 0; queued == refused {
				t.Errorf("%d queue waits for a request answered %d", len(d["queue.wait"]), c.status)
			}
		})
	}
}

// TestContinuationIsASpanOfTheSameTrace kills the worker streaming an
// answer: the worker that continues it has a worker.continue span in the
// same trace, the child of the request's span, saying how much of the
// answer the client already had, and the request's span tells of the
// redelivery.
func TestContinuationIsASpanOfTheSameTrace(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 40 // 60 tokens: 1.5 s of streaming.
	tf := startTraced(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, AckWait: time.Second}, true)
	resp, err := http.Post(tf.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"llama3.2","messages":[{"role":"user","content":"Tell me a story"}],"options":{"num_predict":60}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	g := readInBackground(resp.Body)
	fleettest.WaitFor(t, 20*time.Second, "the stream to be under way", func() bool { return g.frames("/api/chat") >= 12 })
	killed := -1
	for i := range tf.Sims {
		if tf.Sims[i].Stats().Active == 1 {
			tf.KillWorker(i)
			killed = i
		}
	}
	if killed < 0 {
		t.Fatal("no worker was streaming the answer")
	}
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the answer did not end after its worker was killed")
	}
	fleettest.WaitFor(t, 10*time.Second, "the continuation's span", func() bool { return len(spans(tf.workers)["worker.continue"]) == 1 })
	fleettest.WaitFor(t, 10*time.Second, "the request's span", func() bool { return len(spans(tf.dispatcher)["POST /api/chat"]) == 1 })
	d, w := spans(tf.dispatcher), spans(tf.workers)
	request, cont := one(t, d, "POST /api/chat"), one(t, w, "worker.continue")
	childOf(t, cont, request)
	other := fmt.Sprintf("w%d", 1-killed)
	if got := attr(cont, tracing.AttrWorker).AsString(); got != other {
		t.Errorf("continued by %s, want %s", got, other)
	}
	if n := attr(cont, tracing.AttrResumed).AsInt64(); n < 12 || attr(cont, tracing.AttrAttempt).AsInt64() < 2 || attr(cont, tracing.AttrOutcome).AsString() != "done" {
		t.Errorf("continuation resumed %d frames on attempt %v with outcome %v; want at least 12, attempt 2 or later, done", n, attr(cont, tracing.AttrAttempt), attr(cont, tracing.AttrOutcome))
	}
	if !hasEvent(request, "redelivered") || request.Status.Code == codes.Error {
		t.Errorf("request span events %v status %v: want a redelivered event and no error", request.Events, request.Status)
	}
	// The killed worker's attempt is in the trace too, as the first run.
	for _, s := range w["worker.run"] {
		if attr(s, tracing.AttrWorker).AsString() == fmt.Sprintf("w%d", killed) {
			childOf(t, s, request)
		}
	}
	tf.StartWorker(killed) // Its cleanup stops it again.
}

// TestQueueWaitOverIsAFailedQueueWait: a job no worker takes within the
// queue wait ends its queue.wait span, and the request's, with the error,
// and the request's span has the 503.
func TestQueueWaitOverIsAFailedQueueWait(t *testing.T) {
	tf := startTraced(t, fleettest.Options{Workers: 1, QueueWait: time.Second}, true)
	tf.StopWorker(0)
	tf.WaitFor("the stopped worker to leave the node bucket", func() bool { return len(tf.View.Nodes()) == 0 })
	status, _, body := post(t, tf.URL+"/api/generate", `{"model":"llama3.2","prompt":"x"}`)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("got %d %s, want 503", status, body)
	}
	fleettest.WaitFor(t, 10*time.Second, "the request's span", func() bool { return len(spans(tf.dispatcher)["POST /api/generate"]) == 1 })
	d := spans(tf.dispatcher)
	request, wait := one(t, d, "POST /api/generate"), one(t, d, "queue.wait")
	childOf(t, wait, request)
	if wait.Status.Code != codes.Error || request.Status.Code != codes.Error || !strings.Contains(request.Status.Description, "no worker started the job") {
		t.Errorf("queue wait status %v, request status %v: want both failed because no worker started the job", wait.Status, request.Status)
	}
	if got := attr(request, "http.response.status_code").AsInt64(); got != http.StatusServiceUnavailable {
		t.Errorf("request span status code %d, want 503", got)
	}
	if d := wait.EndTime.Sub(wait.StartTime); d < time.Second {
		t.Errorf("queue wait of %s, want the whole queue wait (1s)", d)
	}
}
