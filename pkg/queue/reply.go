package queue

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Reply is one message on a reply subject, decoded.
type Reply struct {
	Kind        job.Kind
	Job         string
	Attempt     int
	Seq         int
	Status      int    // HTTP status, on the first data message and on error
	ContentType string // on the first data message
	Worker      string // on start
	Resumed     int    // on start: the attempt continues after this many data messages
	Error       string // on error
	Data        []byte // Ollama's bytes, on data; {"error": ...} on error
}

// Msg encodes the reply for publishing to subject.
func (r Reply) Msg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(job.HeaderKind, string(r.Kind))
	m.Header.Set(job.HeaderJob, r.Job)
	m.Header.Set(job.HeaderAttempt, strconv.Itoa(r.Attempt))
	m.Header.Set(job.HeaderSeq, strconv.Itoa(r.Seq))
	if r.Status != 0 {
		m.Header.Set(job.HeaderStatus, strconv.Itoa(r.Status))
	}
	if r.ContentType != "" {
		m.Header.Set(job.HeaderContentType, r.ContentType)
	}
	if r.Worker != "" {
		m.Header.Set(job.HeaderWorker, r.Worker)
	}
	if r.Resumed > 0 {
		m.Header.Set(job.HeaderResumed, strconv.Itoa(r.Resumed))
	}
	if r.Error != "" {
		m.Header.Set(job.HeaderError, r.Error)
	}
	m.Data = r.Data
	return m
}

// ErrorBody is Ollama's error shape, {"error": msg}.
func ErrorBody(msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg}) // A struct of one string always marshals.
	return b
}

// ParseReply decodes a reply message. It fails on a message that does not
// follow docs/protocol.md.
func ParseReply(m *nats.Msg) (Reply, error) {
	r := Reply{
		Kind:        job.Kind(m.Header.Get(job.HeaderKind)),
		Job:         m.Header.Get(job.HeaderJob),
		ContentType: m.Header.Get(job.HeaderContentType),
		Worker:      m.Header.Get(job.HeaderWorker),
		Error:       m.Header.Get(job.HeaderError),
		Data:        m.Data,
	}
	switch r.Kind {
	case job.KindStart, job.KindData, job.KindDone, job.KindError:
	default:
		return Reply{}, fmt.Errorf("parse reply: unknown kind %q", r.Kind)
	}
	var err error
	if r.Attempt, err = strconv.Atoi(m.Header.Get(job.HeaderAttempt)); err != nil || r.Attempt < 1 {
		return Reply{}, fmt.Errorf("parse reply: bad %s %q", job.HeaderAttempt, m.Header.Get(job.HeaderAttempt))
	}
	if r.Seq, err = strconv.Atoi(m.Header.Get(job.HeaderSeq)); err != nil || r.Seq < 1 {
		return Reply{}, fmt.Errorf("parse reply: bad %s %q", job.HeaderSeq, m.Header.Get(job.HeaderSeq))
	}
	if s := m.Header.Get(job.HeaderResumed); s != "" {
		if r.Resumed, err = strconv.Atoi(s); err != nil {
			return Reply{}, fmt.Errorf("parse reply: bad %s %q", job.HeaderResumed, s)
		}
	}
	if s := m.Header.Get(job.HeaderStatus); s != "" {
		if r.Status, err = strconv.Atoi(s); err != nil {
			return Reply{}, fmt.Errorf("parse reply: bad %s %q", job.HeaderStatus, s)
		}
	}
	return r, nil
}
