// Package job is the OllamaMax wire protocol (docs/protocol.md): model names
// and their subject encoding, job classes, subject builders and parsers,
// message headers, the route table, reply framing (Reply, ParseReply), the
// frames Ollama's bytes travel in (Frames, Payload, SSEEvent), and the types
// of the resume exchange (Progress, Transcript).
//
// It is the shared vocabulary of the dispatcher, the worker and any Go NATS
// client, which needs this package and nats.go and nothing else of the
// module. It uses the standard library only and must not import NATS or any
// other package of this module: headers are plain maps, which nats.Header is
// underneath.
package job
