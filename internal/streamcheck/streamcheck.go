// Package streamcheck reads an answer as a client receives it from a streamed
// inference route: Ollama's NDJSON (/api/generate, /api/chat), OpenAI chat
// completion chunks, Anthropic Messages events, OpenAI Responses events. It
// checks that the answer is one well-formed stream of its API (one opening,
// indexes and sequence numbers that follow each other, ids that stay the
// same, blocks and items opened and closed in order, aggregates that hold
// what the deltas said, one ending) and returns its text, so that a test can
// compare a stream another worker continued with an uninterrupted one.
//
// It is for tests. It imports only the standard library and pkg/job.
package streamcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// Answer is what a stream said.
type Answer struct {
	Text, Thinking string
	// Events are the stream's frames, decoded, with the values that differ
	// between any two runs (times, durations, prompt counts, which a
	// continuation's prompt makes larger, and ids, named by order of first
	// appearance) masked, and generate's context left out: two runs of one
	// deterministic answer, continued or not, have equal Events.
	Events []string
}

// Read checks the body of a streamed answer to route and returns what it said.
func Read(route string, body []byte) (Answer, error) {
	var frames [][]byte
	ct := "text/event-stream"
	if strings.HasPrefix(route, "/api/") {
		ct = "application/x-ndjson"
	}
	if err := job.Frames(bytes.NewReader(body), ct, func(b []byte) error {
		frames = append(frames, bytes.Clone(b))
		return nil
	}); err != nil {
		return Answer{}, err
	}
	if len(frames) == 0 {
		return Answer{}, fmt.Errorf("an empty stream")
	}
	r := reader{ids: map[string]string{}}
	var err error
	switch route {
	case "/api/generate", "/api/chat":
		err = r.native(frames)
	case "/v1/chat/completions":
		err = r.chat(frames)
	case "/v1/messages":
		err = r.messages(frames)
	case "/v1/responses":
		err = r.responses(frames)
	default:
		return Answer{}, fmt.Errorf("route %s does not stream", route)
	}
	return r.answer, err
}

type reader struct {
	answer Answer
	ids    map[string]string
}

// volatile members differ between runs; masked.
var volatile = map[string]bool{
	"created_at": true, "created": true, "completed_at": true, "total_duration": true, "load_duration": true,
	"prompt_eval_duration": true, "eval_duration": true, "prompt_eval_count": true, "prompt_tokens": true,
	"input_tokens": true, "total_tokens": true, "request_id": true,
}

// dropped members are left out: generate's deprecated context, which a
// continued answer (a raw generate, to Ollama) does not have.
var dropped = map[string]bool{"context": true}

// ids are members whose values are ids, named by order of first appearance.
var ids = map[string]bool{"id": true, "item_id": true}

// decode reads one frame's JSON and records it, masked, as an event.
func (r *reader) decode(i int, frame []byte) (map[string]any, error) {
	var v, masked map[string]any
	if err := json.Unmarshal(job.Payload(frame), &v); err != nil {
		return nil, fmt.Errorf("frame %d %q: %w", i, frame, err)
	}
	if e, ok := v["error"]; ok && e != nil {
		return nil, fmt.Errorf("frame %d is an error: %s", i, frame)
	}
	_ = json.Unmarshal(job.Payload(frame), &masked) // It decoded just now.
	b, _ := json.Marshal(r.mask(masked))            // Decoded JSON always encodes.
	name := job.EventName(frame)
	if name != "" {
		name = "event: " + name + " "
	}
	r.answer.Events = append(r.answer.Events, name+string(b))
	return v, nil
}

func (r *reader) mask(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch {
			case dropped[k]:
				delete(x, k)
			case volatile[k]:
				x[k] = "<masked>"
			case ids[k]:
				if s, ok := x[k].(string); ok {
					if _, seen := r.ids[s]; !seen {
						r.ids[s] = fmt.Sprintf("<id%d>", len(r.ids))
					}
					x[k] = r.ids[s]
				}
			default:
				x[k] = r.mask(x[k])
			}
		}
	case []any:
		for i := range x {
			x[i] = r.mask(x[i])
		}
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func num(v any) (int, bool) {
	f, ok := v.(float64)
	return int(f), ok && f == float64(int(f))
}

func (r *reader) native(frames [][]byte) error {
	for i, f := range frames {
		c, err := r.decode(i, f)
		if err != nil {
			return err
		}
		r.answer.Text += str(c["response"])
		r.answer.Thinking += str(c["thinking"])
		if m := obj(c["message"]); m != nil {
			r.answer.Text += str(m["content"])
			r.answer.Thinking += str(m["thinking"])
		}
		done, _ := c["done"].(bool)
		if done != (i == len(frames)-1) {
			return fmt.Errorf("frame %d of %d: done is %v", i, len(frames), done)
		}
	}
	return nil
}

func (r *reader) chat(frames [][]byte) error {
	var id string
	var created any
	finished, usage := false, false
	for i, f := range frames {
		if string(job.Payload(f)) == string(job.SSEDone) {
			if i != len(frames)-1 || !finished {
				return fmt.Errorf("[DONE] at frame %d of %d, finished %v", i, len(frames), finished)
			}
			return nil
		}
		c, err := r.decode(i, f)
		if err != nil {
			return err
		}
		if i == 0 {
			id, created = str(c["id"]), c["created"]
		}
		if str(c["id"]) != id || c["created"] != created {
			return fmt.Errorf("frame %d: id %v created %v, the stream began with %s %v", i, c["id"], c["created"], id, created)
		}
		choices, _ := c["choices"].([]any)
		if len(choices) == 0 {
			if !finished || usage || c["usage"] == nil {
				return fmt.Errorf("frame %d: a chunk without choices (finished %v, usage before %v)", i, finished, usage)
			}
			usage = true
			continue
		}
		if finished {
			return fmt.Errorf("frame %d: a chunk after the finish", i)
		}
		ch := obj(choices[0])
		d := obj(ch["delta"])
		if role, has := d["role"]; has != (i == 0) || has && role != "assistant" {
			return fmt.Errorf("frame %d: role %v", i, role)
		}
		r.answer.Text += str(d["content"])
		r.answer.Thinking += str(d["reasoning"])
		finished = ch["finish_reason"] != nil
	}
	return fmt.Errorf("no [DONE]")
}

func (r *reader) messages(frames [][]byte) error {
	open, next, ended := -1, 0, false
	var kind string
	for i, f := range frames {
		e, err := r.decode(i, f)
		if err != nil {
			return err
		}
		typ := str(e["type"])
		if name := job.EventName(f); name != typ {
			return fmt.Errorf("frame %d: event %q of type %q", i, name, typ)
		}
		if (i == 0) != (typ == "message_start") {
			return fmt.Errorf("frame %d: %s", i, typ)
		}
		index, _ := num(e["index"])
		switch typ {
		case "message_start", "ping":
		case "content_block_start":
			if open >= 0 || index != next || ended {
				return fmt.Errorf("frame %d: block %d starts (open %d, next %d)", i, index, open, next)
			}
			open, next, kind = index, next+1, str(obj(e["content_block"])["type"])
		case "content_block_delta":
			d := obj(e["delta"])
			switch {
			case index != open:
				return fmt.Errorf("frame %d: a delta of block %d, open %d", i, index, open)
			case kind == "text" && str(d["type"]) == "text_delta":
				r.answer.Text += str(d["text"])
			case kind == "thinking" && str(d["type"]) == "thinking_delta":
				r.answer.Thinking += str(d["thinking"])
			case kind == "tool_use" && str(d["type"]) == "input_json_delta":
			default:
				return fmt.Errorf("frame %d: a %v in a %s block", i, d["type"], kind)
			}
		case "content_block_stop":
			if index != open {
				return fmt.Errorf("frame %d: block %d stops, open %d", i, index, open)
			}
			open = -1
		case "message_delta":
			if open >= 0 || ended {
				return fmt.Errorf("frame %d: message_delta with block %d open, or twice", i, open)
			}
			ended = true
		case "message_stop":
			if !ended || i != len(frames)-1 {
				return fmt.Errorf("frame %d of %d: message_stop, message_delta before: %v", i, len(frames), ended)
			}
			return nil
		default:
			return fmt.Errorf("frame %d: unknown event %s", i, typ)
		}
	}
	return fmt.Errorf("no message_stop")
}

func (r *reader) responses(frames [][]byte) error {
	type item struct {
		id, typ, text string
		done          bool
	}
	var items []*item
	var respID string
	cur := func(e map[string]any) (*item, error) {
		i, ok := num(e["output_index"])
		if !ok || i < 0 || i >= len(items) || items[i].done {
			return nil, fmt.Errorf("output_index %v of %d items", e["output_index"], len(items))
		}
		if id, has := e["item_id"]; has && id != items[i].id {
			return nil, fmt.Errorf("item_id %v, item %d is %s", id, i, items[i].id)
		}
		return items[i], nil
	}
	checkText := func(what string, got any, it *item) error {
		if str(got) != it.text {
			return fmt.Errorf("%s says %q, the deltas %q", what, got, it.text)
		}
		return nil
	}
	for i, f := range frames {
		e, err := r.decode(i, f)
		if err != nil {
			return err
		}
		typ := str(e["type"])
		if name := job.EventName(f); name != typ {
			return fmt.Errorf("frame %d: event %q of type %q", i, name, typ)
		}
		if seq, _ := num(e["sequence_number"]); seq != i {
			return fmt.Errorf("frame %d: sequence_number %v", i, e["sequence_number"])
		}
		if resp := obj(e["response"]); resp != nil {
			if i == 0 {
				respID = str(resp["id"])
			}
			if str(resp["id"]) != respID {
				return fmt.Errorf("frame %d: response %v, the stream's is %s", i, resp["id"], respID)
			}
		}
		want := map[int]string{0: "response.created", 1: "response.in_progress"}
		if w, ok := want[i]; ok && typ != w {
			return fmt.Errorf("frame %d: %s, want %s", i, typ, w)
		}
		err = nil
		switch typ {
		case "response.created", "response.in_progress":
			if i > 1 {
				err = fmt.Errorf("a second %s", typ)
			}
		case "response.output_item.added":
			it := obj(e["item"])
			if n, _ := num(e["output_index"]); n != len(items) || len(items) > 0 && !items[len(items)-1].done {
				err = fmt.Errorf("item %v added with %d items, the last done: %v", e["output_index"], len(items), len(items) > 0 && items[len(items)-1].done)
			}
			items = append(items, &item{id: str(it["id"]), typ: str(it["type"])})
		case "response.content_part.added", "response.function_call_arguments.delta", "response.function_call_arguments.done":
			_, err = cur(e)
		case "response.output_text.delta", "response.reasoning_summary_text.delta":
			var it *item
			if it, err = cur(e); err == nil {
				it.text += str(e["delta"])
				if typ == "response.output_text.delta" {
					r.answer.Text += str(e["delta"])
				} else {
					r.answer.Thinking += str(e["delta"])
				}
			}
		case "response.output_text.done", "response.reasoning_summary_text.done":
			var it *item
			if it, err = cur(e); err == nil {
				err = checkText(typ, e["text"], it)
			}
		case "response.content_part.done":
			var it *item
			if it, err = cur(e); err == nil {
				err = checkText(typ, obj(e["part"])["text"], it)
			}
		case "response.output_item.done":
			var it *item
			if it, err = cur(e); err == nil {
				err = checkItem(obj(e["item"]), it.id, it.typ, it.text)
				it.done = true
			}
		case "response.failed", "response.incomplete":
			return fmt.Errorf("frame %d: %s: %s", i, typ, f)
		case "response.completed":
			if i != len(frames)-1 {
				return fmt.Errorf("frame %d of %d: response.completed", i, len(frames))
			}
			out, _ := obj(e["response"])["output"].([]any)
			if len(out) != len(items) {
				return fmt.Errorf("response.completed has %d items, the stream %d", len(out), len(items))
			}
			for j, it := range items {
				if !it.done {
					return fmt.Errorf("item %d never done", j)
				}
				if err := checkItem(obj(out[j]), it.id, it.typ, it.text); err != nil {
					return fmt.Errorf("response.completed: %w", err)
				}
			}
			if obj(obj(e["response"])["usage"]) == nil {
				return fmt.Errorf("response.completed without usage")
			}
			return nil
		default:
			err = fmt.Errorf("unknown event")
		}
		if err != nil {
			return fmt.Errorf("frame %d (%s): %w", i, typ, err)
		}
	}
	return fmt.Errorf("no response.completed")
}

// checkItem checks a whole output item against what the stream said of it.
func checkItem(it map[string]any, id, typ, text string) error {
	if str(it["id"]) != id || str(it["type"]) != typ {
		return fmt.Errorf("item %v %v, want %s %s", it["id"], it["type"], id, typ)
	}
	var got string
	switch typ {
	case "message":
		content, _ := it["content"].([]any)
		if len(content) != 1 {
			return fmt.Errorf("message with %d parts", len(content))
		}
		got = str(obj(content[0])["text"])
	case "reasoning":
		summary, _ := it["summary"].([]any)
		if len(summary) != 1 {
			return fmt.Errorf("reasoning with %d summaries", len(summary))
		}
		got = str(obj(summary[0])["text"])
		if str(it["encrypted_content"]) != got {
			return fmt.Errorf("reasoning's encrypted_content %q, summary %q", it["encrypted_content"], got)
		}
	default:
		return nil
	}
	if got != text {
		return fmt.Errorf("%s %s holds %q, the deltas said %q", typ, id, got, text)
	}
	return nil
}
