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
// body to send, how many data messages the requester already has and the
// splicer that makes the continuation's frames go on from the requester's
// (nil when there is nothing to splice), or ok=false with the result to
// settle the job with.
func (t *task) resume(ctx context.Context) (body []byte, resumed int, sp splicer, res result, ok bool) {
	if t.msg == nil || (t.attempt < 2 && !t.live()) {
		return t.body, 0, nil, result{}, true
	}
	q, _ := json.Marshal(job.ResumeRequest{Attempt: t.attempt}) // Always marshals.
	ask := func() (*nats.Msg, error) {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return t.w.nc.RequestWithContext(rctx, job.ResumeSubject(t.requester, t.id), q)
	}
	m, err := ask()
	// A live requester whose connection moves to another server (a
	// cluster node went down) has no responder for a moment: ask again for
	// up to LiveRetry before taking it for gone.
	// A requester already found gone is asked once.
	for retryUntil := time.Now().Add(LiveRetry); errors.Is(err, nats.ErrNoResponders) && t.live() && !t.w.gone.known(t.requester) &&
		time.Now().Before(retryUntil) && ctx.Err() == nil; {
		time.Sleep(250 * time.Millisecond)
		m, err = ask()
	}
	if err == nil {
		t.w.gone.alive(t.requester)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders) && t.live() && t.w.noRespondersMeansGone():
		// It said it answers for as long as it wants the answer: it is gone.
		t.w.gone.mark(t.requester)
		return nil, 0, nil, result{kind: resCanceled, msg: "requester gone"}, false
	case errors.Is(err, nats.ErrNoResponders) && t.live():
		// Just after this worker's reconnect it may not be back yet: run
		// from the beginning, and let the probes tell.
		t.w.log.Info("requester not back yet after a reconnect; running the job", "job", t.id, "attempt", t.attempt)
		return t.body, 0, nil, result{}, true
	case errors.Is(err, nats.ErrNoResponders):
		// A requester that does not answer resume requests starts over on a
		// higher attempt, as the protocol says: run from the beginning.
		return t.body, 0, nil, result{}, true
	case err != nil:
		t.w.log.Warn("ask requester for progress; starting over", "job", t.id, "err", err)
		return t.body, 0, nil, result{}, true
	}
	var p job.Progress
	if err := json.Unmarshal(m.Data, &p); err != nil {
		return t.body, 0, nil, result{}, true
	}
	switch {
	case p.Gone:
		return nil, 0, nil, result{kind: resCanceled, msg: "requester gone"}, false
	case p.Frames == 0:
		return t.body, 0, nil, result{}, true
	case p.Complete:
		// The answer is whole at the requester: end the job, run nothing.
		t.w.log.Info("the requester has the whole answer; ending the job", "job", t.id, "attempt", t.attempt, "frames", p.Frames)
		return nil, p.Frames, nil, result{kind: resDone}, false
	}
	body, err = t.continuation(ctx, p)
	if err != nil {
		msg := fmt.Sprintf("the worker serving this request was lost after %d chunks and %s", p.Frames, err)
		return nil, 0, nil, failed(http.StatusBadGateway, msg), false
	}
	t.w.log.Info("continuing a job another worker started", "job", t.id, "attempt", t.attempt, "frames", p.Frames)
	t.w.metrics.migrated.WithLabelValues(t.model, string(t.class)).Inc()
	return body, p.Frames, newSplicer(t.route, p, t.body), result{}, true
}

// continuation rewrites the job's request so that Ollama continues an answer
// of which the requester has received p: the chat routes by a final partial
// assistant message, which Ollama continues (merged into the request's own
// last message when that is already a partial assistant answer, a prefill);
// generate by its rendered prompt plus the partial answer, in raw mode. A
// token limit is lowered by the tokens already generated.
func (t *task) continuation(ctx context.Context, p job.Progress) ([]byte, error) {
	if p.Unresumable != "" {
		return nil, fmt.Errorf("a %s answer cannot be continued: %s", t.route, p.Unresumable)
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(t.body, &req); err != nil {
		return nil, fmt.Errorf("its request cannot be read: %w", err)
	}
	if rt, ok := job.LookupRoute(t.route); ok && rt.Continue != job.NoContinuation && !streamed(req, rt) {
		return nil, fmt.Errorf("a %s answer that is not streamed cannot be continued", t.route)
	}
	done := p.Tokens
	if done == 0 {
		done = p.Frames // An older requester: one token a frame, as Ollama streams.
	}
	var err error
	switch t.route {
	case "/api/chat", "/v1/chat/completions":
		err = continueChat(req, t.route, p)
	case "/v1/messages":
		err = continueMessages(req, p)
	case "/v1/responses":
		err = continueResponses(req, p)
	case "/api/generate":
		err = t.continueGenerate(ctx, req, p)
	default:
		return nil, fmt.Errorf("a %s response cannot be continued", t.route)
	}
	if err != nil {
		return nil, err
	}
	reduceLimit(req, t.route, done)
	return json.Marshal(req)
}

// streamed tells whether a request of route rt asks for a stream.
func streamed(req map[string]json.RawMessage, rt job.Route) bool {
	var stream *bool
	_ = json.Unmarshal(req["stream"], &stream) // Absent or malformed: the route's default.
	if stream == nil {
		return rt.API == job.Native && rt.Streams
	}
	return *stream
}

// continueChat appends the partial answer to an /api/chat or
// /v1/chat/completions request's messages.
func continueChat(req map[string]json.RawMessage, route string, p job.Progress) error {
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(req["messages"], &msgs); err != nil {
		return fmt.Errorf("its messages cannot be read: %w", err)
	}
	thinkKey := "thinking"
	if route == "/v1/chat/completions" {
		thinkKey = "reasoning"
	}
	last := len(msgs) - 1
	var prefill map[string]json.RawMessage
	if last >= 1 && rawString(msgs[last]["role"]) == "assistant" && !hasItems(msgs[last]["tool_calls"]) {
		prefill = msgs[last] // The client's own partial answer, which the model continued.
	} else {
		prefill = map[string]json.RawMessage{"role": json.RawMessage(`"assistant"`)}
		msgs = append(msgs, prefill)
	}
	content := rawString(prefill["content"]) + p.Text
	prefill["content"], _ = json.Marshal(content) // Strings always marshal.
	if thinking := rawString(prefill[thinkKey]) + p.Thinking; thinking != "" {
		prefill[thinkKey], _ = json.Marshal(thinking)
	}
	var err error
	req["messages"], err = json.Marshal(msgs)
	return err
}

// continueMessages appends the partial answer to an Anthropic Messages
// request as a final assistant message of a thinking and a text block.
func continueMessages(req map[string]json.RawMessage, p job.Progress) error {
	if p.Seam == nil {
		return errors.New("a /v1/messages answer cannot be continued: the requester did not say where its stream stands")
	}
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(req["messages"], &msgs); err != nil {
		return fmt.Errorf("its messages cannot be read: %w", err)
	}
	var blocks []json.RawMessage
	if p.Thinking != "" {
		b, _ := json.Marshal(map[string]string{"type": "thinking", "thinking": p.Thinking}) // Strings always marshal.
		blocks = append(blocks, b)
	}
	if p.Text != "" {
		b, _ := json.Marshal(map[string]string{"type": "text", "text": p.Text})
		blocks = append(blocks, b)
	}
	last := len(msgs) - 1
	if last >= 1 && rawString(msgs[last]["role"]) == "assistant" {
		// A prefill: the model continued the client's assistant message,
		// whose text blocks Ollama joins (a thinking block replaces any
		// earlier one, as Anthropic allows no thinking in a prefill).
		own, err := contentBlocks(msgs[last]["content"])
		if err != nil {
			return err
		}
		msgs[last]["content"] = joinArray(append(own, blocks...))
	} else {
		msgs = append(msgs, map[string]json.RawMessage{"role": json.RawMessage(`"assistant"`), "content": joinArray(blocks)})
	}
	var err error
	req["messages"], err = json.Marshal(msgs)
	return err
}

// contentBlocks reads an Anthropic message's content, a string or blocks.
func contentBlocks(raw json.RawMessage) ([]json.RawMessage, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		b, _ := json.Marshal(map[string]string{"type": "text", "text": s}) // Strings always marshal.
		return []json.RawMessage{b}, nil
	}
	var blocks []json.RawMessage
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, fmt.Errorf("its last message cannot be read: %w", err)
	}
	return blocks, nil
}

// continueResponses appends the partial answer to an OpenAI Responses
// request's input: the thinking as a reasoning item (which Ollama attaches to
// the assistant message after it) and the text as an assistant output
// message. A string input becomes the list of one user message it stands for.
func continueResponses(req map[string]json.RawMessage, p job.Progress) error {
	if p.Seam == nil {
		return errors.New("a /v1/responses answer cannot be continued: the requester did not say where its stream stands")
	}
	var items []json.RawMessage
	var s string
	switch {
	case json.Unmarshal(req["input"], &s) == nil:
		if s != "" {
			b, _ := json.Marshal(map[string]string{"type": "message", "role": "user", "content": s}) // Strings always marshal.
			items = append(items, b)
		}
	case len(req["input"]) == 0 || string(req["input"]) == "null":
	default:
		if err := json.Unmarshal(req["input"], &items); err != nil {
			return fmt.Errorf("its input cannot be read: %w", err)
		}
	}
	var add []json.RawMessage
	if p.Thinking != "" {
		b, _ := json.Marshal(map[string]any{"type": "reasoning", "summary": []any{}, "encrypted_content": p.Thinking})
		add = append(add, b)
	}
	text, _ := json.Marshal(map[string]string{"type": "output_text", "text": p.Text}) // Strings always marshal.
	if last := len(items) - 1; last >= 1 && isAssistantMessage(items[last]) {
		// A prefill: the model continued the client's assistant message.
		// Ollama joins its content parts; the reasoning goes before it.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(items[last], &m); err != nil {
			return fmt.Errorf("its last input item cannot be read: %w", err)
		}
		parts, err := outputParts(m["content"])
		if err != nil {
			return err
		}
		if p.Text != "" {
			parts = append(parts, text)
		}
		m["content"] = joinArray(parts)
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		items = append(append(items[:last], add...), b)
	} else {
		if p.Text != "" {
			b, _ := json.Marshal(map[string]any{"type": "message", "role": "assistant", "content": []json.RawMessage{text}})
			add = append(add, b)
		}
		items = append(items, add...)
	}
	req["input"] = joinArray(items)
	return nil
}

// isAssistantMessage reports whether a Responses input item is an assistant
// message (the type may be left out).
func isAssistantMessage(item json.RawMessage) bool {
	var m struct{ Type, Role string }
	return json.Unmarshal(item, &m) == nil && (m.Type == "message" || m.Type == "") && m.Role == "assistant"
}

// outputParts reads a Responses message's content, a string or parts.
func outputParts(raw json.RawMessage) ([]json.RawMessage, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		b, _ := json.Marshal(map[string]string{"type": "output_text", "text": s}) // Strings always marshal.
		return []json.RawMessage{b}, nil
	}
	var parts []json.RawMessage
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &parts); err != nil {
			return nil, fmt.Errorf("its last input item cannot be read: %w", err)
		}
	}
	return parts, nil
}

// continueGenerate turns a generate request into a raw one whose prompt is
// the rendered prompt followed by the partial answer.
func (t *task) continueGenerate(ctx context.Context, req map[string]json.RawMessage, p job.Progress) error {
	if p.Thinking != "" {
		return errors.New("a thinking answer to /api/generate cannot be continued")
	}
	var raw bool
	_ = json.Unmarshal(req["raw"], &raw) // Absent or malformed: not raw.
	var prompt string
	if raw {
		if err := json.Unmarshal(req["prompt"], &prompt); err != nil {
			return fmt.Errorf("its prompt cannot be read: %w", err)
		}
	} else {
		rendered, err := t.render(ctx, req)
		if err != nil {
			return err
		}
		prompt = rendered
		for _, k := range []string{"system", "template", "context"} {
			delete(req, k) // Raw mode refuses them; the rendering has them.
		}
		req["raw"] = json.RawMessage("true")
	}
	req["prompt"], _ = json.Marshal(prompt + p.Text)
	return nil
}

// rawString decodes a JSON string, "" for anything else.
func rawString(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s) // Not a string: "".
	return s
}

// hasItems reports whether raw is a non-empty JSON array.
func hasItems(raw json.RawMessage) bool {
	a, ok := arrayOf(raw)
	return ok && len(a) > 0
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

// reduceLimit lowers the request's token limit by what was already generated,
// so the whole answer keeps its length (at least one more token).
func reduceLimit(req map[string]json.RawMessage, route string, done int) {
	switch route {
	case "/v1/chat/completions", "/v1/messages", "/v1/responses":
		key := map[string]string{"/v1/chat/completions": "max_tokens", "/v1/messages": "max_tokens", "/v1/responses": "max_output_tokens"}[route]
		var n int
		if json.Unmarshal(req[key], &n) == nil && n > 0 {
			req[key], _ = json.Marshal(max(n-done, 1))
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
