package worker

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (docs/operations.md, "Tracing"), with Config.Tracer. Each
// delivery of a job gets a consumer span, "worker.run", the child of the
// trace context the job carries (job.HeaderTraceparent): of the request's
// span at the dispatcher. When it continues an answer another worker
// started it is "worker.continue". In it are the HTTP client span of the
// request to Ollama, whose traceparent Ollama receives, and the event
// "first token".

// startRun starts the span of delivery m.
func (w *Worker) startRun(ctx context.Context, m jetstream.Msg) (context.Context, trace.Span) {
	if !w.tracer.On() {
		return ctx, trace.SpanFromContext(ctx)
	}
	h := m.Headers()
	ctx = w.tracer.Extract(ctx, tracing.NATSHeader(h))
	attrs := []attribute.KeyValue{tracing.AttrJob.String(h.Get(job.HeaderJob)), tracing.AttrWorker.String(w.cfg.ID),
		semconv.MessagingSystemKey.String("nats"), semconv.MessagingDestinationName(m.Subject()), semconv.MessagingOperationTypeProcess,
		semconv.HTTPRoute(h.Get(job.HeaderRoute))}
	if md, err := m.Metadata(); err == nil {
		attrs = append(attrs, tracing.AttrAttempt.Int(int(md.NumDelivered)))
	}
	if model, class, _, err := job.ParseJobSubject(m.Subject()); err == nil {
		attrs = append(attrs, tracing.AttrModel.String(model), tracing.AttrClass.String(string(class)))
	}
	return w.tracer.Start(ctx, "worker.run", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// outcomes name the result kinds on a run's span.
var outcomes = map[resultKind]string{resDone: "done", resFailed: "failed", resRetry: "retry", resCanceled: "canceled",
	resHandBack: "handed_back", resPassOn: "passed_on", resAffinity: "left_to_preferred", resSuperseded: "superseded"}

// traceResult puts how the delivery ended here on its span: an error
// status for what failed or went back to the queue for another attempt.
// On the last attempt a retry is a failure (settle buries it).
func traceResult(span trace.Span, r result, last bool) {
	if !span.IsRecording() {
		return
	}
	if r.kind == resRetry && last {
		r.kind = resFailed
	}
	span.SetAttributes(tracing.AttrOutcome.String(outcomes[r.kind]))
	if r.status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(r.status))
	}
	switch r.kind {
	case resFailed, resRetry, resHandBack:
		span.SetStatus(codes.Error, r.msg)
	}
}

// traceContinue renames the run's span for a continuation of an answer of
// which the requester already has resumed data messages.
func traceContinue(ctx context.Context, resumed int) {
	if span := trace.SpanFromContext(ctx); resumed > 0 && span.IsRecording() {
		span.SetName("worker.continue")
		span.SetAttributes(tracing.AttrResumed.Int(resumed))
	}
}

// startOllama starts the client span of t's request to Ollama, within the
// run's span; a node command, which has none, gets no span.
func (t *task) startOllama(ctx context.Context) (context.Context, trace.Span) {
	if !t.w.tracer.On() || !trace.SpanFromContext(ctx).SpanContext().IsValid() {
		return ctx, trace.SpanFromContext(context.Background()) // A no-op span: nothing to trace it in.
	}
	u := t.w.cfg.Ollama
	attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(t.method), semconv.URLFull(u.JoinPath(t.route).String()),
		semconv.ServerAddress(u.Hostname())}
	if p, err := strconv.Atoi(u.Port()); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	return t.w.tracer.Start(ctx, t.method+" "+t.route, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// ollamaAnswered puts Ollama's answer, or the error of the request, on
// its span.
func ollamaAnswered(span trace.Span, resp *http.Response, err error) {
	switch {
	case !span.IsRecording():
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
	default:
		span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
		if resp.StatusCode >= 400 {
			span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
		}
	}
}

// traceFirstToken marks Ollama's first response bytes on the run's span.
func traceFirstToken(ctx context.Context, d time.Duration) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("first token", trace.WithAttributes(attribute.Float64("ollamaq.time_to_first_token_s", d.Seconds())))
	}
}
