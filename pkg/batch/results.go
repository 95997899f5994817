package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Result is one line of the OpenAI Batch API output format. A request that
// failed has both a Response (the status and the error body) and an Error;
// one its batch's completion window left unfinished has only the Error
// (batch_expired), as OpenAI writes it.
type Result struct {
	ID       string       `json:"id"`
	CustomID string       `json:"custom_id"`
	Response *Response    `json:"response"`
	Error    *ResultError `json:"error"`
}

// Response is the HTTP response to one request of a batch.
type Response struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"` // the job ID
	Body       json.RawMessage `json:"body"`
}

// ResultError marks a request that failed.
type ResultError struct {
	Code    string `json:"code"` // batch_cancelled, batch_expired, invalid_request_error or server_error
	Message string `json:"message"`
}

// partial is a job whose result is being read.
type partial struct {
	customID string
	attempt  int
	status   int
	body     []byte
}

// Results reads the results of batch id from the results stream and calls
// emit with each request's result, in the order the requests finished, once
// per request: of a job that ran more than once, the highest attempt that
// got an answer counts, and the first answer stands. It returns once every
// result stored when it began was emitted, with the batch's status; the
// status says whether the results are complete.
func (c *Client) Results(ctx context.Context, id string, emit func(*Result) error) (Status, error) {
	r, _, err := c.get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if r.due(c.now()) || r.State == Expired && r.Final == nil {
		// Expire it first, so that its unfinished lines have their results.
		if _, err := c.Status(ctx, id); err != nil {
			return Status{}, err
		}
		if r, _, err = c.get(ctx, id); err != nil {
			return Status{}, err
		}
	}
	t := newTally()
	parts := map[string]*partial{}
	emitted := map[string]bool{}
	err = c.read(ctx, id, readAll, func(m jetstream.Msg) error {
		jid, _, _ := t.add(m.Subject(), m.Headers())
		if emitted[jid] {
			return nil
		}
		res := assemble(parts, jid, m)
		if res == nil {
			return nil
		}
		emitted[jid] = true
		delete(parts, jid)
		return emit(res)
	})
	if err != nil {
		return Status{}, err
	}
	return c.markDone(ctx, statusOf(r, t.counts, c.now()))
}

// assemble adds one message to its job's partial result and returns the
// result once the message ends the job.
func assemble(parts map[string]*partial, jid string, m jetstream.Msg) *Result {
	h := m.Headers()
	attempt, err := strconv.Atoi(h.Get(job.HeaderAttempt))
	if err != nil {
		return nil
	}
	p := parts[jid]
	if p == nil {
		p = &partial{attempt: -1, customID: h.Get(HeaderCustomID)}
		parts[jid] = p
	}
	kind := job.Kind(h.Get(job.HeaderKind))
	if kind == KindQueued {
		var info markerInfo
		if json.Unmarshal(m.Data(), &info) == nil && info.CustomID != "" {
			p.customID = info.CustomID // Exact, where a header may have lost spaces.
		}
		return nil
	}
	switch {
	case attempt < p.attempt:
		return nil // A superseded attempt.
	case attempt > p.attempt:
		p.attempt, p.status, p.body = attempt, 0, nil
	}
	switch kind {
	case job.KindData:
		if s := h.Get(job.HeaderStatus); s != "" {
			// The first piece of an answer: start it over (two copies of one
			// attempt may interleave; each is whole).
			p.status, _ = strconv.Atoi(s)
			p.body = p.body[:0]
		}
		p.body = append(p.body, m.Data()...)
	case job.KindDone:
		status := p.status
		if status == 0 {
			status = 200
		}
		return &Result{ID: "batch_req_" + jid, CustomID: p.customID,
			Response: &Response{StatusCode: status, RequestID: jid, Body: jsonBody(p.body)}}
	case job.KindError:
		if isExpiry(h) {
			// As OpenAI writes an expired request: no response.
			return &Result{ID: "batch_req_" + jid, CustomID: p.customID,
				Error: &ResultError{Code: "batch_expired", Message: h.Get(job.HeaderError)}}
		}
		status, _ := strconv.Atoi(h.Get(job.HeaderStatus))
		return &Result{ID: "batch_req_" + jid, CustomID: p.customID,
			Response: &Response{StatusCode: status, RequestID: jid, Body: jsonBody(m.Data())},
			Error:    &ResultError{Code: errorCode(status), Message: h.Get(job.HeaderError)}}
	}
	return nil
}

// jsonBody returns a response body as one line of JSON: compacted when it is
// JSON, a JSON string otherwise.
func jsonBody(b []byte) json.RawMessage {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err == nil {
		return buf.Bytes()
	}
	s, _ := json.Marshal(string(b)) // A string always marshals.
	return s
}

// errorCode names the failure of a request with status.
func errorCode(status int) string {
	switch {
	case status == 499:
		return "batch_cancelled"
	case status >= 400 && status < 500:
		return "invalid_request_error"
	}
	return "server_error"
}
