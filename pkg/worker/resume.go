package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// resume prepares a job that another worker already started (attempt > 1):
// it asks the requester how much of the answer it received, and when that is
// not nothing, rewrites the request so that Ollama continues the answer
// instead of starting over (docs/protocol.md, "Resuming"). It returns the
// body to send and how many data messages the requester already has, or
// ok=false with the result to settle the job with.
func (t *task) resume(ctx context.Context) (body []byte, resumed int, res result, ok bool) {
	if t.msg == nil || (t.attempt < 2 && !t.live()) {
		return t.body, 0, result{}, true
	}
	q, _ := json.Marshal(job.ResumeRequest{Attempt: t.attempt}) // Always marshals.
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	m, err := t.w.nc.RequestWithContext(rctx, job.ResumeSubject(t.requester, t.id), q)
	cancel()
	switch {
	case errors.Is(err, nats.ErrNoResponders) && t.live():
		// It said it answers for as long as it wants the answer: it is gone.
		return nil, 0, result{kind: resCanceled, msg: "requester gone"}, false
	case errors.Is(err, nats.ErrNoResponders):
		// A requester that does not answer resume requests starts over on a
		// higher attempt, as the protocol says: run from the beginning.
		return t.body, 0, result{}, true
	case err != nil:
		t.w.log.Warn("ask requester for progress; starting over", "job", t.id, "err", err)
		return t.body, 0, result{}, true
	}
	var p job.Progress
	if err := json.Unmarshal(m.Data, &p); err != nil {
		return t.body, 0, result{}, true
	}
	switch {
	case p.Gone:
		return nil, 0, result{kind: resCanceled, msg: "requester gone"}, false
	case p.Frames == 0:
		return t.body, 0, result{}, true
	}
	body, err = t.continuation(ctx, p)
	if err != nil {
		msg := fmt.Sprintf("the worker serving this request was lost after %d chunks and %s", p.Frames, err)
		return nil, 0, failed(http.StatusBadGateway, msg), false
	}
	t.w.log.Info("continuing a job another worker started", "job", t.id, "attempt", t.attempt, "frames", p.Frames)
	t.w.metrics.migrated.WithLabelValues(t.model, string(t.class)).Inc()
	return body, p.Frames, result{}, true
}

// continuation rewrites the job's request so that Ollama continues an answer
// of which the requester has received p: chat by a final partial assistant
// message, which Ollama continues; generate by its rendered prompt plus the
// partial answer, in raw mode.
func (t *task) continuation(ctx context.Context, p job.Progress) ([]byte, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(t.body, &req); err != nil {
		return nil, fmt.Errorf("its request cannot be read: %w", err)
	}
	switch t.route {
	case "/api/chat", "/v1/chat/completions":
		var msgs []json.RawMessage
		if err := json.Unmarshal(req["messages"], &msgs); err != nil {
			return nil, fmt.Errorf("its messages cannot be read: %w", err)
		}
		partial := map[string]string{"role": "assistant", "content": p.Text}
		if p.Thinking != "" {
			if t.route == "/api/chat" {
				partial["thinking"] = p.Thinking
			} else {
				partial["reasoning"] = p.Thinking
			}
		}
		b, _ := json.Marshal(partial) // Strings always marshal.
		req["messages"], _ = json.Marshal(append(msgs, b))
		reduceLimit(req, t.route, p.Frames)
	case "/api/generate":
		if p.Thinking != "" {
			return nil, errors.New("a thinking answer to /api/generate cannot be continued")
		}
		var raw bool
		_ = json.Unmarshal(req["raw"], &raw) // Absent or malformed: not raw.
		var prompt string
		if raw {
			if err := json.Unmarshal(req["prompt"], &prompt); err != nil {
				return nil, fmt.Errorf("its prompt cannot be read: %w", err)
			}
		} else {
			rendered, err := t.render(ctx, req)
			if err != nil {
				return nil, err
			}
			prompt = rendered
			for _, k := range []string{"system", "template", "context"} {
				delete(req, k) // Raw mode refuses them; the rendering has them.
			}
			req["raw"] = json.RawMessage("true")
		}
		req["prompt"], _ = json.Marshal(prompt + p.Text)
		reduceLimit(req, t.route, p.Frames)
	default:
		return nil, fmt.Errorf("a %s response cannot be continued", t.route)
	}
	return json.Marshal(req)
}

// render asks Ollama for the prompt it would run for a generate request
// (_debug_render_only), so the answer can be continued in raw mode.
func (t *task) render(ctx context.Context, req map[string]json.RawMessage) (string, error) {
	r := make(map[string]json.RawMessage, len(req)+2)
	for k, v := range req {
		r[k] = v
	}
	r["_debug_render_only"] = json.RawMessage("true")
	r["stream"] = json.RawMessage("false")
	b, _ := json.Marshal(r) // Re-encoding decoded JSON cannot fail.
	resp, err := t.w.ollama.Do(ctx, http.MethodPost, "/api/generate", b)
	if err != nil {
		return "", fmt.Errorf("its prompt could not be rendered: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // Read-only.
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("its prompt could not be rendered (status %d)", resp.StatusCode)
	}
	var d struct {
		Info *struct {
			Rendered string `json:"rendered_template"`
		} `json:"_debug_info"`
	}
	if err := json.Unmarshal(out, &d); err != nil || d.Info == nil {
		return "", errors.New("this Ollama does not render prompts (_debug_render_only)")
	}
	return d.Info.Rendered, nil
}

// reduceLimit lowers the request's token limit by what was already generated
// (one token per streamed chunk), so the whole answer keeps its length.
func reduceLimit(req map[string]json.RawMessage, route string, done int) {
	if route == "/v1/chat/completions" {
		var n int
		if json.Unmarshal(req["max_tokens"], &n) == nil && n > 0 {
			req["max_tokens"], _ = json.Marshal(max(n-done, 1))
		}
		return
	}
	var opts map[string]json.RawMessage
	if json.Unmarshal(req["options"], &opts) != nil {
		return
	}
	var n int
	if json.Unmarshal(opts["num_predict"], &n) == nil && n > 0 {
		opts["num_predict"], _ = json.Marshal(max(n-done, 1))
		req["options"], _ = json.Marshal(opts)
	}
}
