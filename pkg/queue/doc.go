// Package queue is OllamaMax's JetStream glue: it applies the stream, consumer
// and KV definitions from the streams package, publishes jobs, frames reply
// messages, and gives requesters one wildcard reply subscription per process.
//
// It imports NATS and the job package; it must not import the dispatcher,
// worker or fleet packages.
package queue
