// Package tracing is OllamaMax's OpenTelemetry glue: the W3C trace context
// (traceparent and tracestate) read from HTTP requests and job messages as
// far as the W3C Trace Context recommendation allows, with tracestate
// bounded; a Tracer that costs nothing when tracing is off; and the tracer
// provider that the standard OTEL_* environment variables ask for (env.go),
// which is none unless they ask for an exporter.
//
// A traceparent a client sends is only ever a parent: the spans are this
// process's own, and nothing else a client writes (baggage, other headers)
// travels with the trace. docs/operations.md ("Tracing") lists the spans.
//
// It imports OpenTelemetry and the standard library only; nothing of this
// module. The dispatcher, the worker and the commands import it.
package tracing

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C Trace Context header names, as W3C spells them. On NATS, whose
// headers are case-sensitive, they are written and read exactly so.
const (
	Traceparent = "traceparent"
	Tracestate  = "tracestate"
)

// MaxTracestate bounds the tracestate this process passes on, in bytes:
// the 512 characters W3C asks every vendor to propagate at least. A longer
// one loses its members over 128 characters, then members from its end,
// as W3C says to truncate it.
const MaxTracestate = 512

// Scope is the instrumentation scope of OllamaMax's spans.
const Scope = "github.com/ollamamax/ollamamax"

// Tracer starts OllamaMax's spans. A nil Tracer is off: it reads no trace
// context, starts no span and injects nothing, at no cost. It is safe for
// concurrent use.
type Tracer struct {
	t trace.Tracer
}

// New returns the Tracer of tp, or nil (off) when tp is nil.
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer(Scope)}
}

// On reports whether t traces.
func (t *Tracer) On() bool { return t != nil }

// Start starts a span as the OpenTelemetry Tracer does. When t is off it
// returns ctx itself and the span ctx already holds (a no-op span when it
// holds none), allocating nothing.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.t.Start(ctx, name, opts...)
}

// Extract returns ctx with the trace context c carries as the remote
// parent of the spans started from it: a traceparent W3C allows (one
// header, version 00 exactly or a later version's known fields, no
// all-zero IDs) and its tracestate bounded to MaxTracestate. It returns
// ctx itself when t is off or c carries no valid traceparent.
func (t *Tracer) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	if t == nil {
		return ctx
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc.WithTraceState(Bound(sc.TraceState())))
}

// Inject writes the trace context of ctx's span into c: traceparent, and
// tracestate when there is one. It writes nothing when t is off or ctx
// holds no valid span context.
func (t *Tracer) Inject(ctx context.Context, c propagation.TextMapCarrier) {
	if t == nil {
		return
	}
	propagation.TraceContext{}.Inject(ctx, c)
}

// Bound returns ts cut to at most MaxTracestate bytes as W3C says to cut
// it: members longer than 128 characters go first, then members from the
// end.
func Bound(ts trace.TraceState) trace.TraceState {
	if ts.Len() == 0 || len(ts.String()) <= MaxTracestate {
		return ts
	}
	var b strings.Builder
	ts.Walk(func(k, v string) bool {
		n := len(k) + 1 + len(v)
		switch {
		case n > 128:
			return true // Dropped first.
		case b.Len() > 0 && b.Len()+1+n > MaxTracestate, b.Len()+n > MaxTracestate:
			return false // It and every member after it.
		case b.Len() > 0:
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		return true
	})
	out, err := trace.ParseTraceState(b.String())
	if err != nil {
		return trace.TraceState{} // Members of a parsed state always parse again.
	}
	return out
}

// HTTPHeader is the trace context carrier of an HTTP request's or
// response's headers. Header names are case-insensitive there. Read, a
// traceparent sent more than once counts as none (W3C: it cannot be told
// which to believe), and several tracestate headers are one list.
type HTTPHeader http.Header

// Get returns the value of key, as above.
func (h HTTPHeader) Get(key string) string {
	return get(http.Header(h).Values(key), key)
}

// Set sets key to value.
func (h HTTPHeader) Set(key, value string) { http.Header(h).Set(key, value) }

// Keys lists the keys of h.
func (h HTTPHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// NATSHeader is the trace context carrier of a NATS message's headers
// (nats.Header converts to it): their names are case-sensitive, so
// traceparent and tracestate are read and written in lower case only.
// Read, a traceparent set more than once counts as none, and several
// tracestate values are one list, as for HTTPHeader.
type NATSHeader map[string][]string

// Get returns the value of key, as above.
func (h NATSHeader) Get(key string) string { return get(h[key], key) }

// Set sets key to value.
func (h NATSHeader) Set(key, value string) { h[key] = []string{value} }

// Keys lists the keys of h.
func (h NATSHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// get is a carrier's Get of key from its values.
func get(values []string, key string) string {
	switch {
	case len(values) == 0:
		return ""
	case strings.EqualFold(key, Tracestate):
		return strings.Join(values, ",")
	case len(values) > 1 && strings.EqualFold(key, Traceparent):
		return ""
	}
	return values[0]
}

// Attributes of OllamaMax's spans beside OpenTelemetry's semantic
// conventions (docs/operations.md, "Tracing").
const (
	AttrJob     = attribute.Key("ollamaq.job.id")         // the job ID, also the response's X-Request-Id
	AttrModel   = attribute.Key("ollamaq.model")          // canonical model name
	AttrClass   = attribute.Key("ollamaq.class")          // interactive, async or batch
	AttrAttempt = attribute.Key("ollamaq.attempt")        // delivery attempt, from 1
	AttrWorker  = attribute.Key("ollamaq.worker")         // worker ID
	AttrResumed = attribute.Key("ollamaq.resumed_frames") // data messages of earlier attempts a continuation goes on from
	AttrOutcome = attribute.Key("ollamaq.outcome")        // how a worker's run ended (worker.run)
)
