package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ErrConfig is wrapped by Setup's errors: an OTEL_* variable has a value
// it cannot use. The error names the variable.
var ErrConfig = errors.New("tracing: bad OpenTelemetry setting")

// Process names the process whose spans Setup's provider exports.
type Process struct {
	// Service is the service.name of its spans unless OTEL_SERVICE_NAME
	// sets another: "ollamamax-dispatcher", "ollamamax-worker".
	Service string
	// Instance is their service.instance.id: the dispatcher's requester
	// ID, the worker's ID.
	Instance string
	// Logger receives what goes wrong with the export (a collector that
	// does not answer), at most one line every ErrorEvery.
	Logger *slog.Logger
}

// ErrorEvery bounds how often the provider logs export errors: a collector
// that is down fails every batch.
const ErrorEvery = 30 * time.Second

// Setup returns the tracer provider the standard OpenTelemetry environment
// variables ask for, and the func that exports the spans still buffered
// and stops it; or, with tracing off, nil and a func that does nothing.
//
// Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or unset while an
// OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). It is off by default, with
// OTEL_TRACES_EXPORTER=none and with OTEL_SDK_DISABLED=true: then nothing
// is started and nothing dials out. On, spans go in batches (OTEL_BSP_*)
// over OTLP/HTTP (OTEL_EXPORTER_OTLP_*: endpoint, headers, TLS files,
// timeout, compression; protocol http/protobuf or http/json), sampled by
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default
// parentbased_always_on), with the resource of p and OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES. A value it cannot use is an ErrConfig error
// naming the variable, rather than a silent default.
//
// On, Setup sets OpenTelemetry's global error handler to p.Logger: the
// SDK reports export errors only there.
func Setup(ctx context.Context, p Process) (trace.TracerProvider, func(context.Context) error, error) {
	none := func(context.Context) error { return nil }
	on, err := enabled()
	if err != nil || !on {
		return nil, none, err
	}
	sampler, err := samplerFromEnv()
	if err != nil {
		return nil, none, err
	}
	if err := checkOTLP(); err != nil {
		return nil, none, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(p.Service), semconv.ServiceInstanceID(p.Instance)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, none, fmt.Errorf("%w: OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", ErrConfig, err)
	}
	// New reads OTEL_EXPORTER_OTLP_* itself; it connects on the first export.
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	if p.Logger != nil {
		otel.SetErrorHandler(newErrorLog(p.Logger, ErrorEvery))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	return tp, tp.Shutdown, nil
}

// enabled reads whether the environment asks for traces.
func enabled() (bool, error) {
	if v := env("OTEL_SDK_DISABLED"); v != "" {
		disabled, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%w: OTEL_SDK_DISABLED=%q: want true or false", ErrConfig, v)
		}
		if disabled {
			return false, nil
		}
	}
	exporters := env("OTEL_TRACES_EXPORTER")
	if exporters == "" {
		return env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	}
	var names []string
	for _, e := range strings.Split(exporters, ",") {
		switch e = strings.ToLower(strings.TrimSpace(e)); e {
		case "otlp", "none":
			names = append(names, e)
		default:
			return false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: the exporters are otlp and none", ErrConfig, exporters)
		}
	}
	return slices.Contains(names, "otlp"), nil
}

// checkOTLP refuses what the OTLP/HTTP exporter would take silently
// otherwise: an endpoint it cannot use, which it ignores, and the gRPC
// protocol, which it does not speak.
func checkOTLP() error {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		v := env(name)
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: %s=%q: want an http:// or https:// URL, such as http://localhost:4318", ErrConfig, name, v)
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		switch v := env(name); v {
		case "", "http/protobuf", "http/json":
		default:
			return fmt.Errorf("%w: %s=%q: OllamaMax exports OTLP over HTTP only: http/protobuf (the default, port 4318) or http/json", ErrConfig, name, v)
		}
	}
	return nil
}

// samplerFromEnv is OTEL_TRACES_SAMPLER and its argument, as the SDK reads
// them, except that a value it does not know is an error, not its default.
func samplerFromEnv() (sdktrace.Sampler, error) {
	name := strings.ToLower(env("OTEL_TRACES_SAMPLER"))
	arg := env("OTEL_TRACES_SAMPLER_ARG")
	ratio := func() (sdktrace.Sampler, error) {
		if arg == "" {
			return sdktrace.TraceIDRatioBased(1), nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("%w: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", ErrConfig, arg)
		}
		return sdktrace.TraceIDRatioBased(r), nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		return ratio()
	case "parentbased_traceidratio":
		s, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(s), nil
	}
	return nil, fmt.Errorf("%w: OTEL_TRACES_SAMPLER=%q: the samplers are always_on, always_off, traceidratio and their parentbased_ forms", ErrConfig, name)
}

func env(name string) string { return strings.TrimSpace(os.Getenv(name)) }

// errorLog logs OpenTelemetry's errors, at most one line every every,
// with the number of errors it did not log since the last line.
type errorLog struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	last   time.Time
	missed int
}

func newErrorLog(log *slog.Logger, every time.Duration) *errorLog {
	return &errorLog{log: log, every: every}
}

// Handle logs err unless a line was logged less than every ago.
func (l *errorLog) Handle(err error) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.missed++
		l.mu.Unlock()
		return
	}
	missed := l.missed
	l.last, l.missed = now, 0
	l.mu.Unlock()
	l.log.Warn("opentelemetry: spans not exported", "err", err, "errors_not_logged", missed)
}
