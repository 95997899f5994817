// Package dispatcher is the HTTP shim: it speaks Ollama's HTTP API, turns each
// inference request into a job on the queue, and relays the worker's chunks
// back as Ollama's own NDJSON or JSON response. Model listings come from the
// node bucket, without a job.
//
// It imports the queue, fleet, broker, tracing and job packages, Ollama's api
// types and OpenTelemetry's API; it must not import the worker.
package dispatcher
