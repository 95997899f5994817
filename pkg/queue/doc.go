// Package queue is OllamaMax's JetStream glue: it applies the stream, consumer
// and KV definitions from the streams package, publishes jobs, sends reply
// messages framed by the job package, buries dead letters, and gives
// requesters one wildcard reply subscription per process, with a bounded
// stream of replies per job.
//
// It imports NATS and the job package; it must not import the dispatcher,
// worker, fleet or batch packages.
package queue
