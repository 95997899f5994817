// Package streams holds OllamaMax's JetStream definitions as data: the job
// stream, the template of its per-model consumers, the node and batch KV
// buckets, the dead letters, the advisories and the batch results, in the JSON form the nats CLI accepts (nats stream add --config jobs.json). The
// code embeds the same files and applies them at start-up.
package streams

import "embed"

// FS holds the definitions: jobs.json, consumer.json, kv_nodes.json,
// dlq.json, advisories.json, reaper.json (its consumer), results.json and
// kv_batches.json.
//
//go:embed *.json
var FS embed.FS
