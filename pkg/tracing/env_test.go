package tracing_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/tracing"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otelVars are the variables Setup reads; each test sets all of them, so
// the machine's own environment does not leak in.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}

func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, v := range otelVars {
		t.Setenv(v, vars[v])
	}
}

func TestSetupIsOffUnlessAnExporterIsAskedFor(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		on   bool
	}{
		{"nothing set", nil, false},
		{"a sampler alone", map[string]string{"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "x"}, false},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, false},
		{"SDK disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, true},
		{"a traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, true},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"exporter OTLP, none", map[string]string{"OTEL_TRACES_EXPORTER": "OTLP, none", "OTEL_SDK_DISABLED": "false"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setEnv(t, c.env)
			tp, shutdown, err := tracing.Setup(t.Context(), tracing.Process{Service: "ollamamax-test", Instance: "t1"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := shutdown(context.Background()); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}()
			if got := tp != nil; got != c.on {
				t.Errorf("on = %v, want %v", got, c.on)
			}
		})
	}
}

func TestSetupRefusesWhatItCannotUse(t *testing.T) {
	cases := []struct {
		env  map[string]string
		name string // the variable the error must name
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://collector"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "xray"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign"}, "OTEL_RESOURCE_ATTRIBUTES"},
	}
	for _, c := range cases {
		t.Run(c.name+" "+strings.Join(values(c.env), " "), func(t *testing.T) {
			setEnv(t, c.env)
			tp, _, err := tracing.Setup(t.Context(), tracing.Process{Service: "ollamamax-test"})
			if !errors.Is(err, tracing.ErrConfig) || !strings.Contains(err.Error(), c.name) {
				t.Errorf("err = %v, want an ErrConfig naming %s", err, c.name)
			}
			if tp != nil {
				t.Error("a provider came with the error")
			}
		})
	}
}

func values(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// collector is an OTLP/HTTP endpoint that keeps what it receives.
type collector struct {
	mu    sync.Mutex
	reqs  []*coltrace.ExportTraceServiceRequest
	paths []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	req := &coltrace.ExportTraceServiceRequest{}
	if err != nil || proto.Unmarshal(b, req) != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.reqs, c.paths = append(c.reqs, req), append(c.paths, r.URL.Path)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{}) // An empty message always marshals.
	_, _ = w.Write(out)
}

// TestSetupExportsOverOTLPHTTP sends a span through the provider Setup
// makes to an OTLP/HTTP endpoint and reads it there, with the resource the
// environment and the process give it.
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	setEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"})
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.Process{Service: "ollamamax-worker", Instance: "w7"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.New(tp).Start(t.Context(), "worker.run")
	span.End()
	if err := shutdown(t.Context()); err != nil { // Exports what the batch holds.
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.reqs) != 1 || col.paths[0] != "/v1/traces" {
		t.Fatalf("%d exports to %v, want 1 to /v1/traces", len(col.reqs), col.paths)
	}
	rs := col.reqs[0].GetResourceSpans()
	if len(rs) != 1 {
		t.Fatalf("%d resource spans, want 1", len(rs))
	}
	attrs := map[string]string{}
	for _, kv := range rs[0].GetResource().GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	for k, want := range map[string]string{"service.name": "ollamamax-worker", "service.instance.id": "w7", "deployment.environment.name": "test"} {
		if attrs[k] != want {
			t.Errorf("resource %s = %q, want %q", k, attrs[k], want)
		}
	}
	spans := rs[0].GetScopeSpans()
	if len(spans) != 1 || spans[0].GetScope().GetName() != tracing.Scope || len(spans[0].GetSpans()) != 1 || spans[0].GetSpans()[0].GetName() != "worker.run" {
		t.Errorf("exported %v, want one worker.run span of scope %s", spans, tracing.Scope)
	}
}

func TestServiceNameFromTheEnvironmentWins(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	setEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": srv.URL + "/v1/traces", "OTEL_SERVICE_NAME": "gpu-box-3"})
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.Process{Service: "ollamamax-worker", Instance: "w7"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.New(tp).Start(t.Context(), "x")
	span.End()
	if err := shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.reqs) != 1 {
		t.Fatalf("%d exports, want 1", len(col.reqs))
	}
	for _, kv := range col.reqs[0].GetResourceSpans()[0].GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" && kv.GetValue().GetStringValue() != "gpu-box-3" {
			t.Errorf("service.name %q, want OTEL_SERVICE_NAME's gpu-box-3", kv.GetValue().GetStringValue())
		}
	}
}

// TestExportErrorsAreLoggedSparingly points the exporter at a collector
// that refuses everything: the errors reach the logger, one line for many.
func TestExportErrorsAreLoggedSparingly(t *testing.T) {
	var refused atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused.Add(1)
		http.Error(w, "no", http.StatusBadRequest) // Permanent: not retried.
	}))
	defer srv.Close()
	setEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: each span its own export
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.Process{Service: "s", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shutdown(context.Background()) }() // Nothing left to export.
	tr := tracing.New(tp)
	for i := range int32(3) {
		_, span := tr.Start(t.Context(), "x")
		span.End()
		deadline := time.Now().Add(5 * time.Second)
		for refused.Load() <= i && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "spans not exported") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := refused.Load(); n < 3 {
		t.Fatalf("%d exports reached the collector, want 3", n)
	}
	if n := strings.Count(buf.String(), "spans not exported"); n != 1 || !strings.Contains(buf.String(), "400 Bad Request") {
		t.Errorf("%d log lines for the failed exports, want 1 with the collector's answer:\n%s", n, buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
