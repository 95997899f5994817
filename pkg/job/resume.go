package job

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// Bounds of what a transcript keeps, so that a requester's memory and its
// answer to a resume request (one NATS message, 1 MiB by default, which
// JSON escaping may make up to six times the text) stay bounded whatever the
// answer.
const (
	// MaxResumeText bounds the text and thinking a transcript holds; an
	// answer with more cannot be continued.
	MaxResumeText = 128 << 10
	// MaxResumeParts bounds the content blocks or output items it tracks.
	MaxResumeParts = 64
)

// Transcript accumulates what a requester has received in one reply stream:
// the answer and the thinking, read from Ollama's native NDJSON chunks
// (generate: response/thinking; chat: message.content/thinking), OpenAI chat
// completion chunks (choices[0].delta.content/reasoning), Anthropic Messages
// events (content_block_delta: text_delta/thinking_delta) and OpenAI
// Responses events (response.output_text.delta,
// response.reasoning_summary_text.delta); how many frames carried them; and
// the seam (Seam) of the routes whose events name ids, indexes and sequence
// numbers. It is what a new worker needs to continue a half-streamed answer.
// Its zero value is ready. It is not safe for concurrent use.
type Transcript struct {
	frames      int
	tokens      int
	text        bytes.Buffer
	thinking    bytes.Buffer
	seam        Seam
	hasSeam     bool
	unresumable string
	complete    bool          // the answer's final frame is here
	started     time.Time     // the first attempt's start
	segStart    time.Time     // the first generated frame of this attempt
	segLast     time.Time     // the last generated frame of this attempt
	generating  time.Duration // of the attempts before this one
}

// Start records that a worker started the job (a start reply); the first
// call is the answer's start, for Progress.Elapsed.
func (t *Transcript) Start() {
	if t.started.IsZero() {
		t.started = time.Now()
	}
}

// chunk is the union of the members Add reads from one frame of any route.
// Members whose type differs between routes are raw.
type chunk struct {
	// Native.
	Done     bool            `json:"done"`     // the final chunk
	Response json.RawMessage `json:"response"` // generate: the text; Responses: the response object
	Thinking string          `json:"thinking"`
	Message  *struct {
		ID        string          `json:"id"`      // Anthropic message_start
		Content   json.RawMessage `json:"content"` // chat: a string
		Thinking  string          `json:"thinking"`
		ToolCalls json.RawMessage `json:"tool_calls"`
	} `json:"message"`
	// OpenAI chat completions.
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Choices []struct {
		FinishReason *string `json:"finish_reason"`
		Delta        *struct {
			Content   *string         `json:"content"`
			Reasoning string          `json:"reasoning"`
			ToolCalls json.RawMessage `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	// Anthropic Messages and OpenAI Responses events.
	Type         string `json:"type"`
	Index        int    `json:"index"`
	ContentBlock *struct {
		Type string `json:"type"`
	} `json:"content_block"`
	Delta json.RawMessage `json:"delta"` // Anthropic: an object; Responses: a string
	Seq   *int            `json:"sequence_number"`
	Item  *struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"item"`
}

// Add takes one data frame of the reply.
func (t *Transcript) Add(frame []byte) {
	t.frames++
	line := Payload(frame)
	if bytes.Equal(line, SSEDone) {
		t.complete = true
	}
	if len(line) == 0 || line[0] != '{' {
		return // [DONE], a comment, or not JSON.
	}
	var c chunk
	if json.Unmarshal(line, &c) != nil {
		return
	}
	switch {
	case c.Type == "" && c.Done, c.Type == "message_stop", c.Type == "response.completed":
		t.complete = true // The answer's last frame: nothing is left to continue.
	}
	var text, thinking string
	if c.Type == "" {
		text, thinking = t.chunk(&c)
	} else {
		text, thinking = t.event(&c)
	}
	if text == "" && thinking == "" {
		return
	}
	t.tokens++
	now := time.Now()
	if t.segStart.IsZero() {
		t.segStart = now
	}
	t.segLast = now
	if t.unresumable != "" {
		return
	}
	if t.text.Len()+t.thinking.Len()+len(text)+len(thinking) > MaxResumeText {
		t.cannot("it is longer than " + strconv.Itoa(MaxResumeText>>10) + " KiB")
		return
	}
	t.text.WriteString(text)
	t.thinking.WriteString(thinking)
	if t.hasSeam && len(t.seam.Parts) > 0 && t.seam.Open {
		t.seam.Parts[len(t.seam.Parts)-1].Len += len(text) + len(thinking)
	}
}

// cannot marks the answer as one no worker can continue, and frees what
// would only have served to continue it.
func (t *Transcript) cannot(why string) {
	if t.unresumable == "" {
		t.unresumable = why
		t.text, t.thinking = bytes.Buffer{}, bytes.Buffer{}
		t.seam, t.hasSeam = Seam{}, false
	}
}

// chunk reads a native or OpenAI chat completion chunk.
func (t *Transcript) chunk(c *chunk) (text, thinking string) {
	if len(c.Response) > 0 && c.Response[0] == '"' {
		_ = json.Unmarshal(c.Response, &text) // A valid JSON string: it decoded as part of c.
	}
	thinking = c.Thinking
	if m := c.Message; m != nil {
		if len(m.Content) > 0 && m.Content[0] == '"' {
			var s string
			_ = json.Unmarshal(m.Content, &s) // Likewise.
			text += s
		}
		thinking += m.Thinking
		if hasItems(m.ToolCalls) {
			t.cannot("it has tool calls")
		}
	}
	for _, ch := range c.Choices {
		if d := ch.Delta; d != nil {
			if d.Content != nil {
				text += *d.Content
			}
			thinking += d.Reasoning
			if hasItems(d.ToolCalls) {
				t.cannot("it has tool calls")
			}
		}
	}
	if c.ID != "" && t.unresumable == "" {
		if !t.hasSeam {
			t.seam, t.hasSeam = Seam{ID: c.ID, Created: c.Created}, true
		}
		switch {
		case c.Choices != nil && len(c.Choices) == 0 && t.seam.Ended == 1:
			t.seam.Ended = 2 // The usage chunk, after the finish chunk.
		case len(c.Choices) > 0 && c.Choices[0].FinishReason != nil:
			t.seam.Ended = 1
		}
	}
	return text, thinking
}

// hasItems reports whether raw is a non-empty JSON array.
func hasItems(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 2 && raw[0] == '['
}

// event reads an Anthropic Messages or OpenAI Responses event.
func (t *Transcript) event(c *chunk) (text, thinking string) {
	if t.unresumable != "" {
		return t.deltaText(c)
	}
	if c.Seq != nil {
		t.hasSeam = true
		t.seam.Seq = *c.Seq + 1
	}
	switch c.Type {
	case "message_start":
		if c.Message != nil {
			t.seam.ID, t.hasSeam = c.Message.ID, true
		}
	case "response.created", "response.in_progress":
		var r struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(c.Response, &r) == nil && r.ID != "" {
			t.seam.ID, t.hasSeam = r.ID, true
		}
	case "content_block_start":
		if c.ContentBlock != nil {
			t.part(Part{Type: c.ContentBlock.Type})
		}
	case "response.output_item.added":
		if c.Item != nil {
			t.part(Part{Type: c.Item.Type, ID: c.Item.ID})
		}
	case "content_block_stop", "response.output_item.done":
		t.seam.Open = false
	case "response.content_part.added":
		if n := len(t.seam.Parts); n > 0 && t.seam.Open {
			t.seam.Parts[n-1].Content = true
		}
	case "response.reasoning_summary_text.done", "response.output_text.done", "response.content_part.done":
		if n := len(t.seam.Parts); n > 0 && t.seam.Open {
			t.seam.Parts[n-1].Ends++
		}
		if c.Type == "response.output_text.done" {
			t.seam.Ended = 1 // Sent when the answer is done, with its whole text.
		}
	case "message_delta":
		t.seam.Ended = 1
	}
	return t.deltaText(c)
}

// deltaText returns the text or thinking an event adds.
func (t *Transcript) deltaText(c *chunk) (text, thinking string) {
	switch c.Type {
	case "content_block_delta":
		var d struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			Thinking string `json:"thinking"`
		}
		if json.Unmarshal(c.Delta, &d) == nil {
			switch d.Type {
			case "text_delta":
				return d.Text, ""
			case "thinking_delta":
				return "", d.Thinking
			}
		}
	case "response.output_text.delta", "response.reasoning_summary_text.delta":
		var s string
		if json.Unmarshal(c.Delta, &s) == nil {
			if c.Type == "response.output_text.delta" {
				return s, ""
			}
			return "", s
		}
	}
	return "", ""
}

// part records a content block or output item the stream opened.
func (t *Transcript) part(p Part) {
	switch p.Type {
	case "text", "thinking", "message", "reasoning":
	default:
		// tool_use, function_call, server tools: the partial answer a worker
		// sends its Ollama could not hold them.
		t.cannot("it has tool calls")
		return
	}
	if len(t.seam.Parts) == MaxResumeParts {
		t.cannot("it has more than " + strconv.Itoa(MaxResumeParts) + " parts")
		return
	}
	t.hasSeam = true
	t.seam.Parts = append(t.seam.Parts, p)
	t.seam.Open = true
}

// Progress is a requester's answer to a worker that is about to run a job
// again after another worker died with it (docs/protocol.md, "Resuming").
// A requester older than Tokens sends only Gone, Frames, Text and Thinking;
// a worker must still continue what it can with those.
type Progress struct {
	// Gone: the requester no longer wants the job; do not run it.
	Gone bool `json:"gone,omitempty"`
	// Frames is how many data messages of earlier attempts it has received
	// (and passed on); 0 means start from the beginning.
	Frames int `json:"frames"`
	// Attempt is the attempt the requester follows now; a worker whose
	// attempt is lower was superseded (its job was redelivered) and stops.
	Attempt int `json:"attempt,omitempty"`
	// Text and Thinking are the answer and the thinking received so far.
	Text     string `json:"text,omitempty"`
	Thinking string `json:"thinking,omitempty"`
	// Tokens is how many of those frames carried text or thinking: the
	// tokens the earlier attempts generated, as Ollama streams one token a
	// chunk.
	Tokens int `json:"tokens,omitempty"`
	// Elapsed is the time from the first attempt's start to this answer,
	// and Generating the time over which the earlier attempts' tokens
	// arrived (first to last, per attempt), as the requester measured them.
	Elapsed    time.Duration `json:"elapsed_ns,omitempty"`
	Generating time.Duration `json:"generating_ns,omitempty"`
	// Seam is what a continuing worker needs to make its stream go on from
	// where the client's ends, on the routes whose events carry ids,
	// indexes or sequence numbers; nil for the native routes.
	Seam *Seam `json:"seam,omitempty"`
	// Unresumable, when set, says why no worker can continue the answer
	// (tool calls, too long): the worker must answer an error instead.
	Unresumable string `json:"unresumable,omitempty"`
	// Complete says the requester has the answer's final frame (a native
	// done:true chunk, [DONE], message_stop, response.completed): the
	// earlier worker died between it and its done reply. The worker then
	// only ends the job: start, done, nothing more.
	Complete bool `json:"complete,omitempty"`
	// Lost, in the answer to a probe: replies of the asking worker's
	// attempt were lost on the way, and the requester (which may not NAK)
	// follows a later attempt; the worker hands the job back at once so
	// that another continues it from what the requester has.
	Lost bool `json:"lost,omitempty"`
}

// Seam is what the client has seen of the envelope around a streamed
// answer's text.
type Seam struct {
	// ID is the answer's id as the client saw it: the chat completion
	// chunks' id, the Anthropic message's, the Responses response's.
	ID string `json:"id,omitempty"`
	// Created is the chat completion chunks' created time (Unix seconds).
	Created int64 `json:"created,omitempty"`
	// Seq is the sequence_number the next Responses event must carry.
	Seq int `json:"seq,omitempty"`
	// Parts are the Anthropic content blocks or the Responses output items
	// the stream has opened, in order (their index or output_index is their
	// position), and Open tells whether the last one is still open.
	Parts []Part `json:"parts,omitempty"`
	Open  bool   `json:"open,omitempty"`
	// Ended is how many of the events that end the answer the client has:
	// 1 for Anthropic's message_delta, the Responses output_text.done and
	// the chat completion chunk with a finish_reason, 2 for the chat
	// completion usage chunk after it. A continuation may only add the
	// closing events the client lacks.
	Ended int `json:"ended,omitempty"`
}

// Part is one content block (Anthropic) or output item (Responses).
type Part struct {
	// Type is thinking or text (Anthropic), reasoning or message (Responses).
	Type string `json:"type"`
	// ID is a Responses output item's id.
	ID string `json:"id,omitempty"`
	// Len is how many bytes of Thinking (thinking, reasoning) or Text (text,
	// message) the part holds: the parts of each kind hold it in order.
	Len int `json:"len,omitempty"`
	// Content tells that the client has the Responses message item's
	// content_part.added.
	Content bool `json:"content,omitempty"`
	// Ends is how many of the open Responses item's closing events the
	// client has (reasoning_summary_text.done; output_text.done, then
	// content_part.done), before its output_item.done.
	Ends int `json:"ends,omitempty"`
}

// ResumeRequest is what a worker sends before running attempt Attempt, and,
// with Probe, every second while it runs a job whose requester said it
// answers (HeaderLive): is the requester still there, and still following
// this attempt? A probe changes nothing at the requester.
type ResumeRequest struct {
	Attempt int  `json:"attempt"`
	Probe   bool `json:"probe,omitempty"`
}

// Complete tells whether the transcript holds the answer's final frame.
func (t *Transcript) Complete() bool { return t.complete }

// Progress returns what the transcript holds, as the answer to a resume
// request. It ends the current attempt's share of Generating: call it when
// a new attempt takes over.
func (t *Transcript) Progress() Progress {
	now := time.Now()
	if !t.segStart.IsZero() {
		t.generating += t.segLast.Sub(t.segStart)
		t.segStart = time.Time{}
	}
	p := Progress{Frames: t.frames, Tokens: t.tokens, Generating: t.generating, Unresumable: t.unresumable, Complete: t.complete}
	if !t.started.IsZero() {
		p.Elapsed = now.Sub(t.started)
	}
	if t.unresumable != "" {
		return p
	}
	p.Text, p.Thinking = t.text.String(), t.thinking.String()
	if t.hasSeam {
		s := t.seam
		s.Parts = append([]Part(nil), t.seam.Parts...)
		p.Seam = &s
	}
	return p
}
