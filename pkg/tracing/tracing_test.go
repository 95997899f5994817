package tracing_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	spanID  = "00f067aa0ba902b7"
	parent  = "00-" + traceID + "-" + spanID + "-01"
)

// on is a Tracer with an SDK provider that records every span.
func on(t *testing.T) (*tracing.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tracing.New(tp), exp
}

func TestHeaderNamesAreW3CsAndTheProtocols(t *testing.T) {
	fields := propagation.TraceContext{}.Fields()
	if fields[0] != tracing.Traceparent || fields[1] != tracing.Tracestate {
		t.Errorf("propagator fields %v, want %s and %s", fields, tracing.Traceparent, tracing.Tracestate)
	}
	if job.HeaderTraceparent != tracing.Traceparent || job.HeaderTracestate != tracing.Tracestate {
		t.Errorf("job headers %q and %q, want %q and %q", job.HeaderTraceparent, job.HeaderTracestate, tracing.Traceparent, tracing.Tracestate)
	}
}

// TestExtractTakesOnlyWhatW3CAllows reads trace contexts of every shape a
// client can send over HTTP: only a single well-formed traceparent becomes
// the parent, and it is only a parent, remote, of this process's spans.
func TestExtractTakesOnlyWhatW3CAllows(t *testing.T) {
	cases := []struct {
		name        string
		traceparent []string
		tracestate  []string
		want        string // the parent's trace ID; "" for none
		sampled     bool
		state       string
	}{
		{name: "none"},
		{name: "valid and sampled", traceparent: []string{parent}, want: traceID, sampled: true},
		{name: "valid, not sampled", traceparent: []string{"00-" + traceID + "-" + spanID + "-00"}, want: traceID},
		{name: "with tracestate", traceparent: []string{parent}, tracestate: []string{"congo=t61rcWkgMzE"}, want: traceID, sampled: true, state: "congo=t61rcWkgMzE"},
		{name: "tracestate in two headers is one list", traceparent: []string{parent}, tracestate: []string{"a=1", "b=2"}, want: traceID, sampled: true, state: "a=1,b=2"},
		{name: "malformed tracestate is dropped, traceparent kept", traceparent: []string{parent}, tracestate: []string{"not a list member"}, want: traceID, sampled: true},
		{name: "a later version's extra fields", traceparent: []string{"cc-" + traceID + "-" + spanID + "-01-what-the-future-holds"}, want: traceID, sampled: true},
		{name: "two traceparents", traceparent: []string{parent, "00-" + strings.Repeat("1", 32) + "-" + spanID + "-01"}},
		{name: "upper-case hex", traceparent: []string{"00-" + strings.ToUpper(traceID) + "-" + spanID + "-01"}},
		{name: "all-zero trace ID", traceparent: []string{"00-" + strings.Repeat("0", 32) + "-" + spanID + "-01"}},
		{name: "all-zero span ID", traceparent: []string{"00-" + traceID + "-" + strings.Repeat("0", 16) + "-01"}},
		{name: "version ff", traceparent: []string{"ff-" + traceID + "-" + spanID + "-01"}},
		{name: "version 00 with more fields", traceparent: []string{parent + "-00"}},
		{name: "short trace ID", traceparent: []string{"00-" + traceID[1:] + "-" + spanID + "-01"}},
		{name: "garbage", traceparent: []string{"hello"}},
	}
	tr, exp := on(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.traceparent {
				h.Add("Traceparent", v)
			}
			for _, v := range c.tracestate {
				h.Add("Tracestate", v)
			}
			ctx := tr.Extract(context.Background(), tracing.HTTPHeader(h))
			sc := trace.SpanContextFromContext(ctx)
			if c.want == "" {
				if sc.IsValid() {
					t.Fatalf("parent %s from %q, want none", sc.TraceID(), c.traceparent)
				}
				return
			}
			if got := sc.TraceID().String(); got != c.want || !sc.IsRemote() || sc.SpanID().String() != spanID {
				t.Fatalf("parent %s/%s remote=%v, want %s/%s remote", got, sc.SpanID(), sc.IsRemote(), c.want, spanID)
			}
			if sc.IsSampled() != c.sampled {
				t.Errorf("sampled %v, want %v", sc.IsSampled(), c.sampled)
			}
			if got := sc.TraceState().String(); got != c.state {
				t.Errorf("tracestate %q, want %q", got, c.state)
			}
			exp.Reset()
			_, span := tr.Start(ctx, "child")
			span.End()
			got := exp.GetSpans()
			if !c.sampled {
				if len(got) != 0 {
					t.Errorf("%d spans of a parent not sampled, want none (parent-based sampling)", len(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d spans, want 1", len(got))
			}
			if got[0].Parent.SpanID().String() != spanID || got[0].SpanContext.SpanID().String() == spanID {
				t.Errorf("span %s with parent %s: the client's span ID must be the parent only", got[0].SpanContext.SpanID(), got[0].Parent.SpanID())
			}
		})
	}
}

func TestNATSHeaderIsCaseSensitive(t *testing.T) {
	tr, _ := on(t)
	for _, c := range []struct {
		key  string
		want bool
	}{{"traceparent", true}, {"Traceparent", false}, {"TRACEPARENT", false}} {
		ctx := tr.Extract(context.Background(), tracing.NATSHeader{c.key: {parent}})
		if got := trace.SpanContextFromContext(ctx).IsValid(); got != c.want {
			t.Errorf("header %q read: %v, want %v", c.key, got, c.want)
		}
	}
	if ctx := tr.Extract(context.Background(), tracing.NATSHeader{"traceparent": {parent, parent}}); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("a traceparent set twice was read")
	}
}

func TestInjectWritesTheSpanNotTheClients(t *testing.T) {
	tr, _ := on(t)
	ctx := tr.Extract(context.Background(), tracing.HTTPHeader{"Traceparent": {parent}, "Tracestate": {"a=1"}})
	ctx, span := tr.Start(ctx, "request")
	defer span.End()
	h := tracing.NATSHeader{}
	tr.Inject(ctx, h)
	want := "00-" + traceID + "-" + span.SpanContext().SpanID().String() + "-01"
	if got := h.Get("traceparent"); got != want {
		t.Errorf("traceparent %q, want %q", got, want)
	}
	if got := h.Get("tracestate"); got != "a=1" {
		t.Errorf("tracestate %q, want a=1", got)
	}
}

// TestOffReadsAndWritesNothing: with no provider, a client's traceparent
// goes nowhere, not even passed through.
func TestOffReadsAndWritesNothing(t *testing.T) {
	var tr *tracing.Tracer = tracing.New(nil)
	if tr.On() {
		t.Fatal("a tracer without a provider is on")
	}
	ctx := tr.Extract(context.Background(), tracing.HTTPHeader{"Traceparent": {parent}})
	if trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("off, the client's traceparent was read")
	}
	ctx2, span := tr.Start(ctx, "x")
	if ctx2 != ctx || span.IsRecording() || span.SpanContext().IsValid() {
		t.Error("off, Start made a context or a span")
	}
	h := tracing.NATSHeader{}
	tr.Inject(trace.ContextWithRemoteSpanContext(ctx, mustParent(t)), h)
	if len(h) != 0 {
		t.Errorf("off, Inject wrote %v", h)
	}
	carrier := tracing.HTTPHeader{"Traceparent": {parent}}
	if n := testing.AllocsPerRun(100, func() {
		c := tr.Extract(ctx, carrier)
		_, s := tr.Start(c, "x")
		s.End()
	}); n != 0 {
		t.Errorf("off, a span costs %v allocations, want 0", n)
	}
}

func mustParent(t *testing.T) trace.SpanContext {
	t.Helper()
	tid, _ := trace.TraceIDFromHex(traceID)
	sid, _ := trace.SpanIDFromHex(spanID)
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

func TestBoundCutsTracestateAsW3CSays(t *testing.T) {
	member := func(key string, n int) string { return key + "=" + strings.Repeat("v", n-len(key)-1) }
	cases := []struct {
		name    string
		members []string
		want    []string // the keys kept, in order
	}{
		{"short stays", []string{member("a", 10), member("b", 10)}, []string{"a", "b"}},
		{"exactly 512 stays", []string{member("a", 255), member("b", 256)}, []string{"a", "b"}},
		{"long members go first", []string{member("a", 100), member("big", 250), member("b", 100), member("c", 100), member("d", 100)}, []string{"a", "b", "c", "d"}},
		{"then from the end", []string{member("a", 120), member("b", 120), member("c", 120), member("d", 120), member("e", 120)}, []string{"a", "b", "c", "d"}},
		{"all long", []string{member("a", 256), member("b", 256), member("c", 256)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts, err := trace.ParseTraceState(strings.Join(c.members, ","))
			if err != nil {
				t.Fatal(err)
			}
			got := tracing.Bound(ts)
			if n := len(got.String()); n > tracing.MaxTracestate {
				t.Errorf("%d bytes, want at most %d", n, tracing.MaxTracestate)
			}
			var keys []string
			got.Walk(func(k, _ string) bool { keys = append(keys, k); return true })
			if fmt.Sprint(keys) != fmt.Sprint(c.want) {
				t.Errorf("kept %v, want %v", keys, c.want)
			}
		})
	}
}

func TestExtractBoundsTracestate(t *testing.T) {
	tr, _ := on(t)
	var members []string
	for i := range 32 {
		members = append(members, fmt.Sprintf("k%d=%s", i, strings.Repeat("x", 100)))
	}
	ctx := tr.Extract(context.Background(), tracing.HTTPHeader{"Traceparent": {parent}, "Tracestate": {strings.Join(members, ",")}})
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		t.Fatal("a long tracestate lost the traceparent")
	}
	if n := len(sc.TraceState().String()); n > tracing.MaxTracestate || n == 0 {
		t.Errorf("tracestate of %d bytes, want 1 to %d", n, tracing.MaxTracestate)
	}
	// More than W3C's 32 members is no tracestate at all.
	ctx = tr.Extract(context.Background(), tracing.HTTPHeader{"Traceparent": {parent}, "Tracestate": {strings.Repeat("a=b,", 33) + "z=y"}})
	if ts := trace.SpanContextFromContext(ctx).TraceState(); ts.Len() != 0 {
		t.Errorf("a tracestate of 34 members kept %d", ts.Len())
	}
}

// FuzzExtract holds Extract to what W3C allows for any header a client or
// a NATS publisher can write: it never panics, a parent it takes
// re-injects as the same lower-case traceparent, and its tracestate is
// bounded.
func FuzzExtract(f *testing.F) {
	f.Add(parent, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
	f.Add("00-"+traceID+"-"+spanID+"-00", "")
	f.Add("cc-"+traceID+"-"+spanID+"-01-x", strings.Repeat("a=b,", 40))
	f.Add("00-"+traceID+"-"+spanID, "=")
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	f.Fuzz(func(t *testing.T, tp, ts string) {
		ctx := tr.Extract(context.Background(), tracing.NATSHeader{"traceparent": {tp}, "tracestate": {ts}})
		sc := trace.SpanContextFromContext(ctx)
		if !sc.IsValid() {
			return
		}
		if n := len(sc.TraceState().String()); n > tracing.MaxTracestate {
			t.Fatalf("tracestate of %d bytes", n)
		}
		if !strings.Contains(tp, sc.TraceID().String()) || !strings.Contains(tp, sc.SpanID().String()) {
			t.Fatalf("parent %s/%s is not the one in %q", sc.TraceID(), sc.SpanID(), tp)
		}
		h := tracing.NATSHeader{}
		tr.Inject(ctx, h)
		want := fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
		if got := h.Get("traceparent"); got != want {
			t.Fatalf("re-injected %q, want %q", got, want)
		}
	})
}
