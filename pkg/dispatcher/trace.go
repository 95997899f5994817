package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing of the queued routes (docs/operations.md, "Tracing"), with
// Options.Tracer. A request gets a server span named by its route pattern
// ("POST /api/chat"), the child of the W3C traceparent it brings, if any,
// and in it an "admission" span from its arrival to its job's publish (or
// to its refusal), then a "queue.wait" span from the publish to the start
// reply of the worker that took the job, and the events "first byte" and
// "redelivered". The job carries the request span's trace context
// (job.HeaderTraceparent), so the workers' spans are its children too.

// requestTrace is what traced and handleJob share of a traced request.
type requestTrace struct {
	arrived time.Time
	job     *jobTrace // set once a job was queued: the admission span has ended
}

type requestTraceKey struct{}

// traced wraps next with the spans of the queued routes; without a tracer
// it is next itself.
func (s *Server) traced(next http.Handler) http.Handler {
	if !s.tracer.On() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := s.mux.Handler(r)
		path, ok := s.queuedRoutes[pattern]
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		rt := &requestTrace{arrived: time.Now()}
		ctx := s.tracer.Extract(r.Context(), tracing.HTTPHeader(r.Header))
		ctx, span := s.tracer.Start(ctx, pattern, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(rt.arrived),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(path), semconv.URLPath(r.URL.Path)))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(ctx, requestTraceKey{}, rt)))
		status := sw.statusOr200()
		if rt.job == nil {
			s.admission(ctx, rt, status) // Refused, or answered without a job.
		}
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 && (rt.job == nil || !rt.job.failed) { // The job's failure says more.
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	})
}

// admission records the admission span of the request of ctx: from its
// arrival until now, refused when status (if not 0) is an error.
func (s *Server) admission(ctx context.Context, rt *requestTrace, status int) {
	_, span := s.tracer.Start(ctx, "admission", trace.WithTimestamp(rt.arrived))
	if status >= 400 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		span.SetStatus(codes.Error, fmt.Sprintf("refused: %d %s", status, http.StatusText(status)))
	}
	span.End()
}

// jobTrace is the traced part of a queued job: the request's span and the
// job's queue wait. A nil jobTrace traces nothing. Only the request's
// handler uses it.
type jobTrace struct {
	req    trace.Span
	wait   trace.Span // nil once a worker started the job
	failed bool       // req's status is set
}

// traceJob ends the admission of qj's request, puts the request span's
// trace context on the job and starts its queue wait. It does nothing
// when the request is not traced.
func (s *Server) traceJob(r *http.Request, qj *queuedJob) {
	ctx := r.Context()
	rt, _ := ctx.Value(requestTraceKey{}).(*requestTrace)
	if rt == nil {
		return
	}
	s.admission(ctx, rt, 0)
	c := propagation.MapCarrier{}
	s.tracer.Inject(ctx, c)
	qj.Traceparent, qj.Tracestate = c[tracing.Traceparent], c[tracing.Tracestate]
	req := trace.SpanFromContext(ctx)
	req.SetAttributes(tracing.AttrJob.String(qj.ID), tracing.AttrModel.String(qj.Model), tracing.AttrClass.String(string(qj.Class)))
	_, wait := s.tracer.Start(ctx, "queue.wait", trace.WithAttributes(tracing.AttrJob.String(qj.ID),
		semconv.MessagingSystemKey.String("nats"), semconv.MessagingDestinationName(job.JobSubject(qj.Model, qj.Class, s.req.ID()))))
	qj.trace = &jobTrace{req: req, wait: wait}
	rt.job = qj.trace
}

// started is a worker's start reply: the end of the queue wait, or, for a
// later attempt, a redelivery.
func (jt *jobTrace) started(rep job.Reply) {
	if jt == nil {
		return
	}
	jt.req.SetAttributes(tracing.AttrAttempt.Int(rep.Attempt), tracing.AttrWorker.String(rep.Worker))
	if jt.wait != nil {
		jt.wait.SetAttributes(tracing.AttrAttempt.Int(rep.Attempt), tracing.AttrWorker.String(rep.Worker))
		jt.wait.End()
		jt.wait = nil
		return
	}
	jt.req.AddEvent("redelivered", trace.WithAttributes(tracing.AttrAttempt.Int(rep.Attempt), tracing.AttrWorker.String(rep.Worker), tracing.AttrResumed.Int(rep.Resumed)))
}

// firstByte is the first bytes of the answer written to the client.
func (jt *jobTrace) firstByte() {
	if jt != nil {
		jt.req.AddEvent("first byte")
	}
}

// fail marks the job's request, and its queue wait if it still waits, as
// failed with msg.
func (jt *jobTrace) fail(msg string) {
	if jt == nil {
		return
	}
	jt.req.SetStatus(codes.Error, msg)
	jt.failed = true
	if jt.wait != nil {
		jt.wait.SetStatus(codes.Error, msg)
		jt.wait.End()
		jt.wait = nil
	}
}

// end ends what is still open when the answer ended with err (nil: the
// job's own last reply): a client that left is no failure of the job's.
func (jt *jobTrace) end(err error, clientGone bool) {
	switch {
	case jt == nil:
		return
	case clientGone:
		jt.req.AddEvent("client went away")
	case err != nil && !errors.Is(err, context.Canceled):
		jt.fail(err.Error())
	}
	if jt.wait != nil {
		jt.wait.End()
		jt.wait = nil
	}
}

// tr is qj's trace, nil for a node command (no qj) or when not traced.
func (qj *queuedJob) tr() *jobTrace {
	if qj == nil {
		return nil
	}
	return qj.trace
}
