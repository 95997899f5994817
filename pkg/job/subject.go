package job

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Subject prefixes. Every subject OllamaMax uses starts with "ollamaq." so one
// account can hold it next to other traffic; docs/protocol.md lists the
// permission sets for the client, worker and admin roles.
const (
	// JobsPrefix is where jobs are published:
	// ollamaq.jobs.<model>.<class>.<requester>.
	JobsPrefix = "ollamaq.jobs"
	// QueuedPrefix carries the stream's header-only republish of every stored
	// job: ollamaq.queued.<model>.<class>.<requester>. Workers use it as a
	// doorbell.
	QueuedPrefix = "ollamaq.queued"
	// ReplyPrefix is where a requester receives chunks:
	// ollamaq.reply.<requester>.<job id>.
	ReplyPrefix = "ollamaq.reply"
	// CancelPrefix is where a requester cancels a job: ollamaq.cancel.<requester>.<job id>.
	CancelPrefix = "ollamaq.cancel"
	// ResumePrefix is where a worker about to run a job again asks its
	// requester how much it already received:
	// ollamaq.resume.<requester>.<job id> (request/reply).
	ResumePrefix = "ollamaq.resume"
	// DLQPrefix holds dead letters: ollamaq.dlq.<model>.<class>.<requester>.
	DLQPrefix = "ollamaq.dlq"
	// NodePrefix is where one worker takes commands that are not queued:
	// ollamaq.node.<worker id>. See NodeRoutes.
	NodePrefix = "ollamaq.node"
	// AuditPrefix holds the audit trail: ollamaq.audit.<kind>.<model>.<requester>,
	// one record per job (kind job) and per management action (kind admin).
	AuditPrefix = "ollamaq.audit"
	// LimitsPrefix carries the dispatchers' rate-limit charges:
	// ollamaq.limits.<dispatcher>. Only dispatchers publish or read them.
	LimitsPrefix = "ollamaq.limits"
)

// Stream and bucket names.
const (
	Stream         = "OLLAMAQ_JOBS"
	DLQStream      = "OLLAMAQ_DLQ"
	AdvisoryStream = "OLLAMAQ_ADVISORIES"
	NodeBucket     = "ollamaq_nodes"
	BatchBucket    = "ollamaq_batches" // batch records (docs/batch.md)
	ResultsStream  = "OLLAMAQ_RESULTS" // stored replies to batch jobs
	BatchRequester = "batch"           // the reserved requester token of batch jobs
	BatchCanceled  = "canceled"        // the state of a canceled batch's record
	KeyBucket      = "ollamaq_keys"    // HTTP API keys, hashed (docs/security.md)
	KeyMACEntry    = "mac"             // the key bucket's entry holding the dispatchers' MAC secret
	AuditStream    = "OLLAMAQ_AUDIT"   // the audit trail and usage ledger
	LimitsStream   = "OLLAMAQ_LIMITS"  // rate-limit charges of the last minutes
	ConfigBucket   = "ollamaq_config"  // shared settings, an entry per role (docs/operations.md)
	// ConfigDispatcher and ConfigWorker are the config bucket's entries
	// every dispatcher and every worker applies.
	ConfigDispatcher = "dispatcher"
	ConfigWorker     = "worker"
)

// Class is a job's priority lane: latency-sensitive work, work that can
// wait a little, and bulk work. Workers pull every interactive job they can
// before they pull any async job, and every async job before any batch job.
type Class string

const (
	Interactive Class = "interactive"
	Async       Class = "async"
	Batch       Class = "batch"
)

// Classes lists the classes in the order workers serve them, highest lane
// first.
var Classes = []Class{Interactive, Async, Batch}

// ErrInvalidSubject is returned for a subject that breaks the layout above.
var ErrInvalidSubject = errors.New("job: invalid subject")

// ParseClass returns the class named s.
func ParseClass(s string) (Class, error) {
	switch Class(s) {
	case Interactive, Async, Batch:
		return Class(s), nil
	}
	return "", fmt.Errorf("job: unknown class %q (want %q, %q or %q)", s, Interactive, Async, Batch)
}

// Rank is the class's place in Classes: 0 for interactive, the highest
// lane; a higher rank is a lower lane. An unknown class ranks below all.
func (c Class) Rank() int {
	if i := slices.Index(Classes, c); i >= 0 {
		return i
	}
	return len(Classes)
}

// JobSubject is the subject a job of requester for the canonical model and
// class is published to: ollamaq.jobs.<model>.<class>.<requester>. The
// requester token is the one of the job's reply subject (ParseReplySubject), so
// that NATS permissions can bind what a client submits to the replies it may
// read, and workers refuse a job whose reply belongs to someone else.
func JobSubject(canonical string, c Class, requester string) string {
	return JobsPrefix + "." + EncodeModel(canonical) + "." + string(c) + "." + requester
}

// JobFilter is the filter of the consumer that holds the jobs of one model
// and class, from every requester.
func JobFilter(canonical string, c Class) string {
	return JobsPrefix + "." + EncodeModel(canonical) + "." + string(c) + ".*"
}

// QueuedSubject is the doorbell of a job of requester for a model (canonical)
// and class: where the stream rings it when the job is stored, where a
// dispatcher rings it again when it has a stalled job redelivered, and
// where a worker rings it when it hands back a job its Ollama cannot run.
func QueuedSubject(canonical string, c Class, requester string) string {
	return QueuedPrefix + "." + EncodeModel(canonical) + "." + string(c) + "." + requester
}

// QueuedFilter is where the stream rings the doorbell for each job stored
// for the canonical model and class (a header-only republish to
// ollamaq.queued.<model>.<class>.<requester>).
func QueuedFilter(canonical string, c Class) string {
	return QueuedPrefix + "." + EncodeModel(canonical) + "." + string(c) + ".*"
}

// ConsumerName is the durable pull consumer that holds the jobs of one model and class.
func ConsumerName(canonical string, c Class) string {
	return EncodeModel(canonical) + "_" + string(c)
}

// ParseJobSubject returns the canonical model, class and requester token of
// a jobs, queued or dead-letter subject. A filter such as JobFilter's parses
// too, with requester "*". A subject in the layout before requester tokens
// (four tokens) wraps ErrOldSubject.
func ParseJobSubject(subject string) (model string, c Class, requester string, err error) {
	tokens := strings.Split(subject, ".")
	if len(tokens) < 2 || tokens[0] != "ollamaq" || (tokens[1] != "jobs" && tokens[1] != "queued" && tokens[1] != "dlq") {
		return "", "", "", fmt.Errorf("%w: %q", ErrInvalidSubject, subject)
	}
	if len(tokens) == 4 {
		return "", "", "", fmt.Errorf("%w: %q", ErrOldSubject, subject)
	}
	if len(tokens) != 5 || !ValidToken(tokens[4]) && tokens[4] != "*" {
		return "", "", "", fmt.Errorf("%w: %q", ErrInvalidSubject, subject)
	}
	model, err = DecodeModel(tokens[2])
	if err != nil {
		return "", "", "", err
	}
	if cm, err := CanonicalModel(model); err != nil || cm != model {
		return "", "", "", fmt.Errorf("%w: %q: model %q is not canonical", ErrInvalidSubject, subject, model)
	}
	if c, err = ParseClass(tokens[3]); err != nil {
		return "", "", "", err
	}
	return model, c, tokens[4], nil
}

// SubjectRequester returns the requester token of a five-token jobs subject
// even when its model or class is invalid, so that a worker can still tell
// the requester why.
func SubjectRequester(subject string) (string, bool) {
	tokens := strings.Split(subject, ".")
	if len(tokens) != 5 || tokens[0] != "ollamaq" || tokens[1] != "jobs" || !ValidToken(tokens[4]) {
		return "", false
	}
	return tokens[4], true
}

// ErrOldSubject is returned for a job subject without a requester token,
// ollamaq.jobs.<model>.<class>: the layout before OllamaMax bound jobs to
// their requesters (docs/protocol.md). The job stream no longer takes them.
var ErrOldSubject = errors.New("job: subject has no requester token: publish on ollamaq.jobs.<model>.<class>.<requester>")

// DLQSubject is where the dead letter of a job queued on jobSubject goes.
func DLQSubject(jobSubject string) string {
	return DLQPrefix + "." + strings.TrimPrefix(jobSubject, JobsPrefix+".")
}

// NodeSubject is the subject on which worker id takes node commands.
func NodeSubject(id string) string { return NodePrefix + "." + id }

// ReplySubject is the subject on which a requester receives the chunks of a job.
func ReplySubject(requester, jobID string) string {
	return ReplyPrefix + "." + requester + "." + jobID
}

// ResumeSubject is where a worker asks requester about job id's progress.
func ResumeSubject(requester, jobID string) string {
	return ResumePrefix + "." + requester + "." + jobID
}

// CancelSubject is the subject on which a requester cancels a job it submitted.
func CancelSubject(requester, jobID string) string {
	return CancelPrefix + "." + requester + "." + jobID
}

// ParseReplySubject returns the requester token and the job ID of a reply
// subject, ollamaq.reply.<requester>.[<more>.]<job id>. Batch replies carry the
// batch ID between the two (docs/batch.md).
func ParseReplySubject(s string) (requester, id string, err error) {
	return parseAddressed(ReplyPrefix, s, false)
}

// ParseCancelSubject returns the requester token and job ID of a cancel subject.
func ParseCancelSubject(s string) (requester, id string, err error) {
	return parseAddressed(CancelPrefix, s, true)
}

// ParseResumeSubject returns the requester token and job ID of a resume subject.
func ParseResumeSubject(s string) (requester, id string, err error) {
	return parseAddressed(ResumePrefix, s, true)
}

// parseAddressed parses prefix.<requester>.<id>, or with more tokens before
// the id unless exact; every token must be a literal.
func parseAddressed(prefix, s string, exact bool) (requester, id string, err error) {
	rest, ok := strings.CutPrefix(s, prefix+".")
	n := strings.Count(rest, ".")
	if !ok || n < 1 || exact && n != 1 {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidSubject, s)
	}
	for t := range strings.SplitSeq(rest, ".") {
		if !ValidToken(t) {
			return "", "", fmt.Errorf("%w: %q", ErrInvalidSubject, s)
		}
	}
	requester, _, _ = strings.Cut(rest, ".")
	return requester, rest[strings.LastIndexByte(rest, '.')+1:], nil
}

// ValidReply reports whether s is a reply subject a worker may publish to:
// ollamaq.reply.<requester>.<id>[...], literal tokens only.
func ValidReply(s string) bool {
	_, _, err := ParseReplySubject(s)
	return err == nil
}

// SafeName reports whether s is 1 to 64 ASCII letters, digits, '-' and
// '_': a subject token that no permission template, KV key, consumer name
// or Prometheus label can misread. User names, batch IDs and tenants are
// such names.
func SafeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// ValidToken reports whether s can be used as one literal subject token.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '*' || c == '>' || c <= ' ' || c == 0x7f:
			return false
		}
	}
	return true
}

// Audit record kinds: the second token of an audit subject.
const (
	AuditJob   = "job"   // one record per job, written when it ends
	AuditAdmin = "admin" // one record per management action
)

// AuditSubject is the subject of an audit record of kind (AuditJob or
// AuditAdmin) about the canonical model by requester. An empty model or
// requester (a job whose subject a worker could not read) is written "-":
// the record itself holds the empty value.
func AuditSubject(kind, canonical, requester string) string {
	m, r := "-", "-"
	if canonical != "" {
		m = EncodeModel(canonical)
	}
	if requester != "" {
		r = requester
	}
	return AuditPrefix + "." + kind + "." + m + "." + r
}

// AuditFilter is the subject filter of the audit records of kind about the
// canonical model; empty arguments match any.
func AuditFilter(kind, canonical string) string {
	k, m := "*", "*"
	if kind != "" {
		k = kind
	}
	if canonical != "" {
		m = EncodeModel(canonical)
	}
	return AuditPrefix + "." + k + "." + m + ".*"
}

// LimitsSubject is where dispatcher id publishes its rate-limit charges.
func LimitsSubject(id string) string { return LimitsPrefix + "." + id }
