package tracing

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Help is what a daemon's --help says about tracing.
const Help = `Tracing: OpenTelemetry traces are off unless the standard variables ask for
them: OTEL_EXPORTER_OTLP_ENDPOINT (an OTLP/HTTP collector, such as
http://otel-collector:4318) or OTEL_TRACES_EXPORTER=otlp. OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_RESOURCE_ATTRIBUTES and the
other OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables apply (docs/operations.md,
"Tracing").
`

// ForDaemon returns the tracer provider the OTEL_* environment asks for
// (Setup) for the process service with ID instance, or nil when tracing is
// off, and a func to defer that exports the spans still buffered, for up
// to five seconds, and stops the provider. It lives here, not with the
// mains' shared code in internal/cli, so that ollamaq, which traces
// nothing, does not link the exporter.
func ForDaemon(ctx context.Context, service, instance string, log *slog.Logger) (trace.TracerProvider, func(), error) {
	tp, shutdown, err := Setup(ctx, Process{Service: service, Instance: instance, Logger: log})
	if err != nil || tp == nil {
		return nil, func() {}, err
	}
	log.Info("tracing: exporting spans over OTLP/HTTP",
		"endpoint", cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "https://localhost:4318 (the exporter's default)"),
		"service", cmp.Or(os.Getenv("OTEL_SERVICE_NAME"), service), "sampler", cmp.Or(os.Getenv("OTEL_TRACES_SAMPLER"), "parentbased_always_on"))
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("tracing: the last spans were not exported", "err", err)
		}
	}, nil
}
