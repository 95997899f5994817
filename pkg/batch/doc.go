// Package batch runs OpenAI-style batch files through the OllamaMax queue:
// it streams the lines of a JSONL file (OpenAI Batch API input format) into
// the job stream as batch-class jobs, keeps a record of each batch in the KV
// bucket ollamaq_batches, and reads the results back from the stream
// OLLAMAQ_RESULTS, where JetStream keeps the workers' replies to batch jobs,
// as OpenAI Batch API output lines. docs/batch.md describes the subjects,
// headers and streams.
//
// Nothing needs to stay up between submitting a batch and collecting its
// results: the jobs, the replies and the records all live in JetStream.
//
// It imports NATS and the job and queue packages; it must not import the
// dispatcher, worker or fleet packages (the worker imports it to drop the
// jobs of canceled batches).
package batch
