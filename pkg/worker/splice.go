package worker

import (
	"bytes"
	"encoding/json"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// The seam of a continued answer.
//
// A worker that continues an answer another worker started (resume.go) gets
// from its Ollama a stream of its own: a fresh envelope (a new message or
// response with a new id, blocks and items from index 0, sequence numbers
// from 0) around the rest of the text, and statistics of that rest alone.
// The client already has the beginning of the first stream, so a splicer
// rewrites the continuation's frames until the two read as one stream, the
// one an uninterrupted run would have sent except for the text itself: it
// drops the opening the client already has, renumbers, keeps the ids the
// client saw, and makes the final counts and aggregates hold the whole
// answer (docs/protocol.md, "Resuming").

// splicer rewrites one continuation frame into the frames to send: none (a
// duplicate opening), the frame as it is or rewritten, or more than one (a
// close the client still needs before the continuation's next event).
type splicer interface {
	frame(b []byte) [][]byte
}

// newSplicer returns the splicer of a continuation of route from p, for the
// client's request body; nil when frames pass as they are.
func newSplicer(route string, p job.Progress, body []byte) splicer {
	switch route {
	case "/api/chat", "/api/generate":
		if p.Tokens > 0 {
			return &nativeSplice{p: p}
		}
	case "/v1/chat/completions":
		return &chatSplice{p: p}
	case "/v1/messages":
		return newMessagesSplice(p)
	case "/v1/responses":
		s := newResponsesSplice(p)
		var req struct {
			MaxOutputTokens *int `json:"max_output_tokens"`
		}
		if json.Unmarshal(body, &req) == nil && req.MaxOutputTokens != nil {
			s.maxOutput, _ = json.Marshal(*req.MaxOutputTokens) // An int always marshals.
		}
		return s
	}
	return nil
}

// one is a splicer's answer of one frame.
func one(b []byte) [][]byte { return [][]byte{b} }

// nativeSplice makes the final chunk's statistics describe the whole answer:
// eval_count counts the tokens the earlier attempts streamed too,
// eval_duration adds the time over which they arrived, and total_duration
// runs from the first attempt's start. prompt_eval_count, prompt_eval_duration
// and load_duration stay the final attempt's: its prompt holds the partial
// answer, which it read again.
type nativeSplice struct{ p job.Progress }

func (s *nativeSplice) frame(b []byte) [][]byte {
	if !bytes.Contains(b, []byte(`"done":true`)) {
		return one(b)
	}
	line := bytes.TrimRight(b, "\r\n")
	o, ok := parseObject(line)
	if !ok {
		return one(b)
	}
	// Ollama leaves out counts and durations that are zero, as a
	// continuation that generates nothing more has them.
	o.addCount("total_duration", int64(s.p.Elapsed), "created_at")
	o.addCount("eval_count", int64(s.p.Tokens), "prompt_eval_duration", "prompt_eval_count", "load_duration", "total_duration")
	o.addCount("eval_duration", int64(s.p.Generating), "eval_count")
	return one(append(o.bytes(), b[len(line):]...))
}

// chatSplice keeps the chunk id and created time the client saw, drops the
// role a continuation's first chunk announces again (Ollama 0.32 puts it on
// a stream's first chunk), and adds the earlier tokens to the usage chunk.
// When the client has the finish chunk already, it passes only what follows
// it.
type chatSplice struct{ p job.Progress }

func (s *chatSplice) frame(b []byte) [][]byte {
	data := job.Payload(b)
	o, ok := parseObject(data)
	if !ok {
		return one(b) // [DONE]
	}
	if seam := s.p.Seam; seam != nil && (seam.Ended >= 1 && hasItems(o.get("choices")) || seam.Ended >= 2 && o.has("usage")) {
		return nil // The client has the finish chunk (and the usage): only the rest is to come.
	}
	if seam := s.p.Seam; seam != nil && seam.ID != "" {
		o.setAny("id", seam.ID)
		if o.has("created") {
			o.setAny("created", seam.Created)
		}
	}
	if choices, ok := arrayOf(o.get("choices")); ok {
		empty := len(choices) > 0
		for i, c := range choices {
			co, ok := parseObject(c)
			if !ok {
				empty = false
				continue
			}
			if d, ok := co.sub("delta"); ok && d.has("role") {
				d.del("role")
				co.set("delta", d.bytes())
				choices[i] = co.bytes()
				// A continuation that has nothing to add still opens with
				// a role chunk of empty content: without the role it says
				// nothing.
				empty = empty && string(d.bytes()) == `{"content":""}` && string(co.get("finish_reason")) == "null" && !co.has("logprobs")
			} else {
				empty = false
			}
		}
		if empty {
			return nil
		}
		o.set("choices", joinArray(choices))
	}
	if u, ok := o.sub("usage"); ok && s.p.Tokens > 0 {
		u.addInt("completion_tokens", int64(s.p.Tokens))
		u.addInt("total_tokens", int64(s.p.Tokens))
		o.set("usage", u.bytes())
	}
	return one(job.SSEEvent(o.bytes()))
}

// arrayOf splits a JSON array into its elements.
func arrayOf(raw json.RawMessage) ([]json.RawMessage, bool) {
	var a []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &a) != nil {
		return nil, false
	}
	return a, true
}

// joinArray writes elements as a JSON array, byte for byte.
func joinArray(a []json.RawMessage) json.RawMessage {
	b := []byte{'['}
	for i, e := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// splitText gives each part the text or thinking it holds (job.Part.Len).
func splitText(p job.Progress, kind func(typ string) bool) []string {
	out := make([]string, len(p.Seam.Parts))
	text, thinking := p.Text, p.Thinking
	for i, part := range p.Seam.Parts {
		src := &text
		if kind(part.Type) {
			src = &thinking
		}
		n := min(max(part.Len, 0), len(*src))
		out[i], *src = (*src)[:n], (*src)[n:]
	}
	return out
}

// messagesSplice splices an Anthropic Messages stream: it drops the
// continuation's message_start and, when it goes on with the block that was
// open, that block's content_block_start; it shifts the continuation's block
// indexes to follow the client's; it closes a block the client has open
// when the continuation goes on with another; and it adds the earlier
// tokens to message_delta's output_tokens. When the client has message_delta
// already, it passes only message_stop.
type messagesSplice struct {
	tokens int
	ended  bool // the client has message_delta: only message_stop is to come
	parts  []job.Part
	open   bool // the client's last block is open and nobody closed it yet
	began  bool // the continuation has started a block
	next   int  // the index the continuation's next new block gets
	index  []int
}

func newMessagesSplice(p job.Progress) *messagesSplice {
	s := &messagesSplice{tokens: p.Tokens}
	if p.Seam != nil {
		s.parts, s.open, s.ended = p.Seam.Parts, p.Seam.Open && len(p.Seam.Parts) > 0, p.Seam.Ended > 0
	}
	s.next = len(s.parts)
	return s
}

func (s *messagesSplice) frame(b []byte) [][]byte {
	o, ok := parseObject(job.Payload(b))
	if !ok {
		return one(b)
	}
	name := o.str("type")
	event := job.EventName(b)
	if s.ended && name != "message_stop" && name != "ping" {
		return nil
	}
	var out [][]byte
	switch name {
	case "message_start":
		return nil
	case "content_block_start":
		i, _ := o.int("index")
		cb, _ := o.sub("content_block")
		first := !s.began
		s.began = true
		if first && s.open && cb.str("type") == s.parts[len(s.parts)-1].Type {
			s.mapIndex(int(i), len(s.parts)-1)
			s.open = false // The continuation's block is the client's, and will close.
			return nil
		}
		out = s.closeOpen()
		s.mapIndex(int(i), s.next)
		s.next++
	case "message_delta":
		out = s.closeOpen()
		if u, ok := o.sub("usage"); ok {
			u.addInt("output_tokens", int64(s.tokens))
			o.set("usage", u.bytes())
		}
	}
	if o.has("index") {
		i, _ := o.int("index")
		o.setAny("index", s.mapped(int(i)))
	}
	return append(out, job.SSENamedEvent(event, o.bytes()))
}

// closeOpen returns the content_block_stop of the client's open block, if
// the continuation did not take it over.
func (s *messagesSplice) closeOpen() [][]byte {
	if !s.open {
		return nil
	}
	s.open = false
	b, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}{"content_block_stop", len(s.parts) - 1}) // As Ollama's anthropic.ContentBlockStopEvent.
	return one(job.SSENamedEvent("content_block_stop", b))
}

func (s *messagesSplice) mapIndex(from, to int) {
	if from < 0 || from >= job.MaxResumeParts*4 {
		return
	}
	for len(s.index) <= from {
		s.index = append(s.index, -1)
	}
	s.index[from] = to
}

func (s *messagesSplice) mapped(i int) int {
	if i >= 0 && i < len(s.index) && s.index[i] >= 0 {
		return s.index[i]
	}
	return i + len(s.parts)
}

// responsesSplice splices an OpenAI Responses stream. It drops the
// continuation's response.created and response.in_progress and, when it goes
// on with the item that was open, that item's output_item.added and
// content_part.added; it numbers every event on from the client's last
// sequence_number, keeps the response id and the ids of items the client
// saw, and shifts output indexes to follow the client's; it makes the done
// events of a continued item (reasoning_summary_text.done, output_text.done,
// content_part.done, output_item.done) hold the item's whole text, closes an
// item the client has open when the continuation goes on with another, and
// makes response.completed hold the whole output and count the earlier
// tokens in its usage, echoing the client's max_output_tokens. When the client has the whole text already
// (output_text.done), it passes only the closing events it lacks.
type responsesSplice struct {
	tokens    int
	maxOutput json.RawMessage // the client's max_output_tokens, which the response echoes
	ended     bool            // the client has output_text.done: only closing events are to come
	ends      int             // closing events of the open item the client has
	content   bool            // the client has the open item's content_part.added
	id        string
	seq       int
	items     []respItem
	orig      int  // how many of items the client had
	open      int  // the client's open item that nobody closed yet, or -1
	taken     int  // the client's item the continuation went on with, or -1
	began     bool // the continuation has added an item
	index     []int
	ids       map[string]string
}

type respItem struct {
	typ, id string
	text    string
	done    json.RawMessage // an item of another type, as output_item.done gave it
}

func newResponsesSplice(p job.Progress) *responsesSplice {
	s := &responsesSplice{tokens: p.Tokens, open: -1, taken: -1, ids: map[string]string{}}
	if p.Seam == nil {
		return s
	}
	s.id, s.seq, s.ended = p.Seam.ID, p.Seam.Seq, p.Seam.Ended > 0
	texts := splitText(p, func(typ string) bool { return typ == "reasoning" })
	for i, part := range p.Seam.Parts {
		s.items = append(s.items, respItem{typ: part.Type, id: part.ID, text: texts[i]})
	}
	s.orig = len(s.items)
	if p.Seam.Open && len(s.items) > 0 {
		s.open = len(s.items) - 1
		s.ends, s.content = p.Seam.Parts[s.open].Ends, p.Seam.Parts[s.open].Content
	}
	return s
}

func (s *responsesSplice) frame(b []byte) [][]byte {
	o, ok := parseObject(job.Payload(b))
	if !ok {
		return one(b)
	}
	event := job.EventName(b)
	var out [][]byte
	switch typ := o.str("type"); {
	case typ == "response.created" && s.seq > 0, typ == "response.in_progress" && s.seq > 1:
		return nil // The opening the client has: the first two events.
	case s.ended && typ != "response.completed" && typ != "response.failed" && typ != "response.incomplete":
		return nil // The client has the whole text: only the closing events are to come.
	}
	switch o.str("type") {
	case "response.output_item.added":
		item, _ := o.sub("item")
		i, _ := o.int("output_index")
		first := !s.began
		s.began = true
		if first && s.open >= 0 && item.str("type") == s.items[s.open].typ {
			s.mapIndex(int(i), s.open)
			s.ids[item.str("id")] = s.items[s.open].id
			s.taken, s.open = s.open, -1 // The continuation's item is the client's, and will close.
			return nil
		}
		out = s.closeOpen()
		s.mapIndex(int(i), len(s.items))
		s.items = append(s.items, respItem{typ: item.str("type"), id: item.str("id")})
	case "response.content_part.added":
		if i, ok := o.int("output_index"); ok && s.taken >= 0 && s.mapped(int(i)) == s.taken && s.content {
			return nil // The client has the part.
		}
	case "response.output_text.delta", "response.reasoning_summary_text.delta":
		if it := s.item(o); it != nil {
			var d string
			_ = json.Unmarshal(o.get("delta"), &d) // Not a string: nothing to add.
			it.text += d
		}
	case "response.output_text.done", "response.reasoning_summary_text.done":
		if it := s.item(o); it != nil {
			o.setAny("text", it.text)
		}
	case "response.content_part.done":
		if it := s.item(o); it != nil {
			if part, ok := o.sub("part"); ok {
				part.setAny("text", it.text)
				o.set("part", part.bytes())
			}
		}
	case "response.output_item.done":
		if it := s.item(o); it != nil {
			if built := it.built(); built != nil {
				o.set("item", built)
			} else {
				it.done = o.get("item")
			}
		}
	case "response.completed", "response.failed", "response.incomplete":
		out = s.closeOpen()
		if r, ok := o.sub("response"); ok {
			if r.has("output") {
				r.set("output", s.output())
			}
			if u, ok := r.sub("usage"); ok {
				u.addInt("output_tokens", int64(s.tokens))
				u.addInt("total_tokens", int64(s.tokens))
				r.set("usage", u.bytes())
			}
			o.set("response", r.bytes())
		}
	}
	s.renumber(&o)
	return append(out, job.SSENamedEvent(event, o.bytes()))
}

// renumber gives an event the client's sequence number, output index and
// item id.
func (s *responsesSplice) renumber(o *object) {
	if r, ok := o.sub("response"); ok {
		if s.id != "" {
			r.setAny("id", s.id)
		}
		if s.maxOutput != nil && r.has("max_output_tokens") {
			r.set("max_output_tokens", s.maxOutput) // Not the continuation's, lowered.
		}
		o.set("response", r.bytes())
	}
	if o.has("sequence_number") {
		o.setAny("sequence_number", s.seq)
		s.seq++
	}
	if i, ok := o.int("output_index"); ok {
		o.setAny("output_index", s.mapped(int(i)))
	}
	if id := o.str("item_id"); id != "" {
		if to, ok := s.ids[id]; ok {
			o.setAny("item_id", to)
		}
	}
	if item, ok := o.sub("item"); ok {
		if to, ok := s.ids[item.str("id")]; ok {
			item.setAny("id", to)
			o.set("item", item.bytes())
		}
	}
}

// item returns the item an event of the continuation is about.
func (s *responsesSplice) item(o object) *respItem {
	i, ok := o.int("output_index")
	if !ok {
		return nil
	}
	j := s.mapped(int(i))
	if j < 0 || j >= len(s.items) {
		return nil
	}
	return &s.items[j]
}

// built encodes a reasoning or message item whole, as Ollama's
// ResponsesStreamConverter does in output_item.done and response.completed
// (from a map, so with its keys sorted); nil for an item of another type.
func (it *respItem) built() json.RawMessage {
	var v map[string]any
	switch it.typ {
	case "reasoning":
		v = map[string]any{
			"id":                it.id,
			"type":              "reasoning",
			"summary":           []map[string]any{{"type": "summary_text", "text": it.text}},
			"encrypted_content": it.text,
		}
	case "message":
		v = map[string]any{
			"id": it.id, "type": "message", "status": "completed", "role": "assistant",
			"content": []map[string]any{{"type": "output_text", "text": it.text, "annotations": []any{}, "logprobs": []any{}}},
		}
	default:
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// output is response.completed's output: every item, whole.
func (s *responsesSplice) output() json.RawMessage {
	a := []json.RawMessage{}
	for i := range s.items {
		if b := s.items[i].built(); b != nil {
			a = append(a, b)
		} else if s.items[i].done != nil {
			a = append(a, s.items[i].done)
		}
	}
	return joinArray(a)
}

// closeOpen returns the done events of the client's open item, if the
// continuation did not take it over: what Ollama sends when an item ends.
func (s *responsesSplice) closeOpen() [][]byte {
	if s.open < 0 {
		return nil
	}
	i := s.open
	s.open = -1
	it := &s.items[i]
	var out [][]byte
	skip := s.ends // The client has these.
	ev := func(name string, data map[string]any) {
		if skip > 0 {
			skip--
			return
		}
		data["type"] = name
		data["sequence_number"] = s.seq
		s.seq++
		b, err := json.Marshal(data)
		if err == nil {
			out = append(out, job.SSENamedEvent(name, b))
		}
	}
	switch it.typ {
	case "reasoning":
		ev("response.reasoning_summary_text.done", map[string]any{"item_id": it.id, "output_index": i, "summary_index": 0, "text": it.text})
	case "message":
		ev("response.output_text.done", map[string]any{"item_id": it.id, "output_index": i, "content_index": 0, "text": it.text, "logprobs": []any{}})
		ev("response.content_part.done", map[string]any{"item_id": it.id, "output_index": i, "content_index": 0,
			"part": map[string]any{"type": "output_text", "text": it.text, "annotations": []any{}, "logprobs": []any{}}})
	}
	ev("response.output_item.done", map[string]any{"output_index": i, "item": it.built()})
	return out
}

func (s *responsesSplice) mapIndex(from, to int) {
	if from < 0 || from >= job.MaxResumeParts*4 {
		return
	}
	for len(s.index) <= from {
		s.index = append(s.index, -1)
	}
	s.index[from] = to
}

// mapped returns the client's output index of the continuation's index i.
func (s *responsesSplice) mapped(i int) int {
	if i >= 0 && i < len(s.index) && s.index[i] >= 0 {
		return s.index[i]
	}
	return i + s.orig
}
