package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidReply is returned for a reply message that does not follow
// docs/protocol.md.
var ErrInvalidReply = errors.New("job: invalid reply")

// SeqFinal is the Seq of a reply that ends a stream whatever came before it:
// the error a worker's reaper sends for a job given up on (docs/protocol.md,
// "Dead letters"). Requesters accept it out of order.
const SeqFinal = 1 << 30

// maxTokens bounds a token count in a reply: more than any model's context.
const maxTokens = 1 << 30

// Reply is one message on a reply subject, decoded.
type Reply struct {
	Kind        Kind
	Job         string
	Attempt     int
	Seq         int
	Status      int    // HTTP status, on the first data message and on error
	ContentType string // on the first data message
	Worker      string // on start, and on done with Record
	Ack         string // on start: the delivery's ack subject (HeaderAck)
	Resumed     int    // on start: the attempt continues after this many data messages
	Error       string // on error
	Data        []byte // Ollama's bytes, on data; {"error": ...} on error
	Usage       *Usage // on done, when Ollama reported token counts
	// Record, on done, is the revision of the worker's node record written
	// after the job or command changed its models or which are loaded, so
	// that a requester serving listings can wait for its view to hold it;
	// 0 for none.
	Record uint64
	// Position, on queued, is the job's place in its model's queue: the
	// jobs ahead of it plus one; 0 when unknown (a batch job's marker).
	Position int
	// ETA, on queued, is how long the job is expected to wait still, from
	// the measured rate at which its model's queue moves; 0 when nothing
	// was measured yet.
	ETA time.Duration
}

// MaxPosition bounds a queued reply's position and MaxETA its ETA: more
// than any queue holds, longer than any job waits.
const (
	MaxPosition = 1 << 30
	MaxETA      = 30 * 24 * time.Hour
)

// Usage is what a job cost, as Ollama counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// Header returns the message headers that carry r; r.Data is the body. The
// map is what nats.Header is underneath, so it can be assigned to one.
func (r Reply) Header() map[string][]string {
	h := map[string][]string{
		HeaderKind:    {string(r.Kind)},
		HeaderJob:     {r.Job},
		HeaderAttempt: {strconv.Itoa(r.Attempt)},
		HeaderSeq:     {strconv.Itoa(r.Seq)},
	}
	set := func(k, v string) {
		if v != "" {
			h[k] = []string{v}
		}
	}
	if r.Status != 0 {
		set(HeaderStatus, strconv.Itoa(r.Status))
	}
	set(HeaderContentType, r.ContentType)
	set(HeaderWorker, r.Worker)
	set(HeaderAck, r.Ack)
	if r.Resumed > 0 {
		set(HeaderResumed, strconv.Itoa(r.Resumed))
	}
	set(HeaderError, r.Error)
	if r.Usage != nil {
		set(HeaderPromptTokens, strconv.Itoa(r.Usage.PromptTokens))
		set(HeaderCompletionTokens, strconv.Itoa(r.Usage.CompletionTokens))
	}
	if r.Record != 0 {
		set(HeaderRecord, strconv.FormatUint(r.Record, 10))
	}
	if r.Position > 0 {
		set(HeaderPosition, strconv.Itoa(r.Position))
	}
	if r.ETA > 0 {
		set(HeaderETA, strconv.FormatInt(max(r.ETA.Milliseconds(), 1), 10))
	}
	return h
}

// ParseReply decodes a reply message from its headers (a nats.Header) and
// body. Every header is checked before use: a reply that breaks
// docs/protocol.md gives an error wrapping ErrInvalidReply, never a value a
// relay could choke on (an HTTP status outside 100–599, say).
func ParseReply(h map[string][]string, data []byte) (Reply, error) {
	r := Reply{
		Kind:        Kind(get(h, HeaderKind)),
		Job:         get(h, HeaderJob),
		ContentType: get(h, HeaderContentType),
		Worker:      get(h, HeaderWorker),
		Ack:         get(h, HeaderAck),
		Error:       get(h, HeaderError),
		Data:        data,
	}
	switch r.Kind {
	case KindStart, KindData, KindHeartbeat, KindDone, KindError:
	case KindQueued:
		return parseQueued(h, r)
	default:
		return Reply{}, fmt.Errorf("%w: unknown kind %q", ErrInvalidReply, r.Kind)
	}
	var ok bool
	if r.Attempt, ok = number(h, HeaderAttempt, 1, SeqFinal); !ok {
		return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderAttempt, get(h, HeaderAttempt))
	}
	if r.Seq, ok = number(h, HeaderSeq, 1, SeqFinal); !ok {
		return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderSeq, get(h, HeaderSeq))
	}
	if r.Ack != "" && !ValidAckSubject(r.Ack) {
		return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderAck, r.Ack)
	}
	if s := get(h, HeaderResumed); s != "" {
		if r.Resumed, ok = number(h, HeaderResumed, 0, SeqFinal); !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderResumed, s)
		}
	}
	if s := get(h, HeaderStatus); s != "" {
		if r.Status, ok = number(h, HeaderStatus, 100, 599); !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderStatus, s)
		}
	}
	if get(h, HeaderPromptTokens) != "" || get(h, HeaderCompletionTokens) != "" {
		var u Usage
		if u.PromptTokens, ok = number(h, HeaderPromptTokens, 0, maxTokens); !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderPromptTokens, get(h, HeaderPromptTokens))
		}
		if u.CompletionTokens, ok = number(h, HeaderCompletionTokens, 0, maxTokens); !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderCompletionTokens, get(h, HeaderCompletionTokens))
		}
		r.Usage = &u
	}
	if s := get(h, HeaderRecord); s != "" {
		n, err := strconv.ParseUint(s, 10, 63)
		if err != nil || n == 0 {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderRecord, s)
		}
		r.Record = n
	}
	return r, nil
}

// parseQueued reads the rest of a queued reply (docs/protocol.md, "Queue
// position"): attempt and seq 0, so that it takes no place in any
// attempt's order, a position and perhaps an ETA.
func parseQueued(h map[string][]string, r Reply) (Reply, error) {
	r = Reply{Kind: r.Kind, Job: r.Job, Worker: r.Worker, Data: r.Data} // Nothing of the other kinds' headers counts here.
	var ok bool
	if _, ok = number(h, HeaderAttempt, 0, 0); !ok {
		return Reply{}, fmt.Errorf("%w: bad %s %q on queued (want 0)", ErrInvalidReply, HeaderAttempt, get(h, HeaderAttempt))
	}
	if _, ok = number(h, HeaderSeq, 0, 0); !ok {
		return Reply{}, fmt.Errorf("%w: bad %s %q on queued (want 0)", ErrInvalidReply, HeaderSeq, get(h, HeaderSeq))
	}
	if s := get(h, HeaderPosition); s != "" {
		if r.Position, ok = number(h, HeaderPosition, 1, MaxPosition); !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderPosition, s)
		}
	}
	if s := get(h, HeaderETA); s != "" {
		ms, ok := number(h, HeaderETA, 1, int(MaxETA/time.Millisecond))
		if !ok {
			return Reply{}, fmt.Errorf("%w: bad %s %q", ErrInvalidReply, HeaderETA, s)
		}
		r.ETA = time.Duration(ms) * time.Millisecond
	}
	return r, nil
}

// get is nats.Header.Get: NATS header names are case-sensitive.
func get(h map[string][]string, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// number reads header key as a decimal integer in [lo, hi].
func number(h map[string][]string, key string, lo, hi int) (int, bool) {
	n, err := strconv.Atoi(get(h, key))
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

// ErrorBody is Ollama's error shape, {"error": msg}.
func ErrorBody(msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg}) // A struct of one string always marshals.
	return b
}

// ValidAckSubject tells whether s is a JetStream ack subject of a job
// delivery: $JS.ACK.<stream>.… (or the v2 form with a domain and account hash
// first) for the job stream, and nothing a requester should publish on
// otherwise.
func ValidAckSubject(s string) bool {
	rest, ok := strings.CutPrefix(s, "$JS.ACK.")
	if !ok || len(s) > 512 || strings.ContainsAny(s, " \t\r\n*>") {
		return false
	}
	tokens := strings.Split(rest, ".")
	for _, t := range tokens {
		if t == "" {
			return false
		}
	}
	switch {
	case len(tokens) >= 7 && tokens[0] == Stream: // v1: stream, consumer, delivered, sseq, dseq, ts, pending
		return true
	case len(tokens) >= 9 && tokens[2] == Stream: // v2: domain, account hash, stream, …
		return true
	}
	return false
}
