package job

// Message headers of the protocol (docs/protocol.md). NATS headers are
// case-sensitive on the wire; these are written and read exactly as spelled.
const (
	// HeaderMsgID is JetStream's de-duplication header; a job's ID goes there.
	HeaderMsgID = "Nats-Msg-Id"

	// Job headers.
	HeaderJob      = "Ollamaq-Job"      // job ID
	HeaderRoute    = "Ollamaq-Route"    // Ollama route the body is for, e.g. /api/chat
	HeaderReply    = "Ollamaq-Reply"    // reply subject for chunks
	HeaderDeadline = "Ollamaq-Deadline" // RFC 3339 time after which the job must not start
	// HeaderBodyType is the Content-Type of the body of a route whose body
	// is a form (Route.Form: multipart/form-data with its boundary); other
	// bodies are JSON and workers ignore it on them.
	HeaderBodyType = "Ollamaq-Body-Type"
	// HeaderLive says the requester answers resume requests for the job
	// for as long as it wants the answer (value "1"): a worker asks before
	// it runs the job and while it runs, and drops the job when the
	// requester is gone (docs/protocol.md, "Requester liveness").
	HeaderLive = "Ollamaq-Live"
	// HeaderPositions says the requester reads queued replies (value "1"):
	// a worker reports the job's place in the queue while it waits
	// (docs/protocol.md, "Queue position"). Without it none are sent, so a
	// requester that predates them never sees a kind it does not know.
	HeaderPositions = "Ollamaq-Positions"
	// Who the job is for, as its requester states it: the dispatcher puts
	// the HTTP client's API key ID and tenant here, with a MAC over both
	// that readers of the audit trail verify (docs/security.md).
	HeaderKey    = "Ollamaq-Key"     // API key ID
	HeaderTenant = "Ollamaq-Tenant"  // tenant of the key
	HeaderKeyMAC = "Ollamaq-Key-Mac" // the dispatchers' MAC over job, requester, key and tenant
	// The W3C trace context of the request the job is for, in lower case
	// as W3C spells it (docs/protocol.md, "Tracing"): a worker that traces
	// continues the trace it names and passes it on to Ollama.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
	// HeaderPrefer names the worker (node ID) that served the previous
	// turn of the job's session (docs/scheduling.md, "Session affinity"):
	// another worker hands the job back once, while it is young, for that
	// one to take. A hint, never a permission: a wrong or forged value
	// costs the job at most the hand-back's wait.
	HeaderPrefer = "Ollamaq-Prefer"
	// HeaderPreferRecord is, with HeaderPrefer, the revision of that
	// worker's node record when the session's previous turn ended there:
	// a record still at that revision may count the previous turn's slot
	// as busy, though it is free (records follow slot changes only about
	// twice a second).
	HeaderPreferRecord = "Ollamaq-Prefer-Record"

	// Reply headers.
	HeaderKind        = "Ollamaq-Kind"         // start, data, heartbeat, done or error
	HeaderAttempt     = "Ollamaq-Attempt"      // delivery attempt, from 1
	HeaderSeq         = "Ollamaq-Seq"          // message number within the attempt, from 1
	HeaderStatus      = "Ollamaq-Status"       // HTTP status: on the first data message and on error
	HeaderContentType = "Ollamaq-Content-Type" // Ollama's Content-Type: on the first data message
	HeaderWorker      = "Ollamaq-Worker"       // worker ID: on start
	HeaderAck         = "Ollamaq-Ack"          // on start: the delivery's JetStream ack subject, for a NAK when the worker falls silent
	HeaderResumed     = "Ollamaq-Resumed"      // on start: continues after this many data messages of earlier attempts
	HeaderError       = "Ollamaq-Error"        // error text: on error
	// Token counts as Ollama reported them, on done when it reported them:
	// prompt_eval_count and eval_count (usage.prompt_tokens and
	// usage.completion_tokens on OpenAI routes).
	HeaderPromptTokens     = "Ollamaq-Prompt-Tokens"
	HeaderCompletionTokens = "Ollamaq-Completion-Tokens"
	// HeaderRecord is on done, with HeaderWorker, when the job or command
	// changed the worker's models or which are loaded: the revision of the
	// node record the worker wrote after it (Reply.Record).
	HeaderRecord = "Ollamaq-Record"
	// On queued: the job's place in its model's queue, from 1, and the
	// estimated wait in milliseconds when one was measured (Reply.Position,
	// Reply.ETA).
	HeaderPosition = "Ollamaq-Position"
	HeaderETA      = "Ollamaq-Eta-Ms"

	// Dead-letter headers, added to a job's own headers in OLLAMAQ_DLQ.
	HeaderDLQReason   = "Ollamaq-Dlq-Reason"   // why the job was given up
	HeaderDLQAttempts = "Ollamaq-Dlq-Attempts" // deliveries it had
	HeaderDLQWorker   = "Ollamaq-Dlq-Worker"   // the last worker that had it, if known
	HeaderDLQSubject  = "Ollamaq-Dlq-Subject"  // the subject it was queued on
	// Batch headers (docs/batch.md), on every batch job and its queued marker.
	HeaderBatch    = "Ollamaq-Batch"     // the batch it belongs to
	HeaderCustomID = "Ollamaq-Custom-Id" // the custom_id of its input line
)

// Kind is the kind of a reply message.
type Kind string

const (
	// KindStart says a worker took the job; it carries no body.
	KindStart Kind = "start"
	// KindData carries Ollama's response bytes: one NDJSON line, one SSE event,
	// or a whole non-streamed JSON body.
	KindData Kind = "data"
	// KindHeartbeat says the worker still holds the job although nothing
	// else was sent for a while (docs/protocol.md, "Heartbeats"); it
	// carries no body and takes its place in the Seq order.
	KindHeartbeat Kind = "heartbeat"
	// KindDone ends a successful job; it carries no body.
	KindDone Kind = "done"
	// KindError ends a failed job; HeaderStatus and HeaderError say why and the
	// body is {"error": "..."}.
	KindError Kind = "error"
	// KindQueued says the job waits in the queue: a worker reports its
	// position and ETA about every second while it waits (docs/protocol.md,
	// "Queue position"), with attempt and seq 0, so it takes no place in
	// any attempt. A batch submitter stores one, with no position, on a
	// batch job's reply subject before it queues the job (docs/batch.md):
	// it carries the custom_id and says the job was queued.
	KindQueued Kind = "queued"
)
