package worker

import (
	"bytes"
	"encoding/json"
	"mime"
	"strconv"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// Token counts.
//
// Ollama reports what a request cost in its final response: native routes
// as prompt_eval_count and eval_count (/api/embed only prompt_eval_count),
// OpenAI routes as a usage object (usage.prompt_tokens and
// usage.completion_tokens), Anthropic Messages and OpenAI Responses as a
// usage object of input_tokens and output_tokens (streamed: on
// message_delta, and in response.completed's response). A streamed
// response's final frame is one small
// JSON object; a non-streamed response is the whole body, which the worker
// relays in pieces (job.Frames) and which can be megabytes of embeddings
// with the counts at the end. So the counts are read by a scanner that sees
// the bytes once, in any pieces, and keeps a few dozen of them.

// maxCount bounds a count the worker reports: job.ParseReply refuses more.
const maxCount = 1 << 30

// counts are the token counts one Ollama response reported.
type counts struct {
	prompt, completion int
	// evalDuration is Ollama's eval_duration (native routes only), for the
	// generation speed; zero when not reported.
	evalDuration time.Duration
}

// The members a countScanner reads: top-level numbers, numbers of the
// top-level object "usage", and of the object "usage" in the top-level
// object "response" (a Responses event's). Zero is no member.
const (
	keyPromptEvalCount = iota + 1
	keyEvalCount
	keyEvalDuration
	keyPromptTokens
	keyCompletionTokens
	keyInputTokens
	keyOutputTokens
	keyUsage    // the member "usage" itself, whose value holds the counts
	keyResponse // the member "response" itself, which may hold "usage"
	numKeys
)

// Where a member is read.
const (
	atTop = iota
	inUsage
	inResponse
)

var countKeys = [numKeys]struct {
	at   int
	name string
}{
	keyPromptEvalCount:  {atTop, "prompt_eval_count"},
	keyEvalCount:        {atTop, "eval_count"},
	keyEvalDuration:     {atTop, "eval_duration"},
	keyPromptTokens:     {inUsage, "prompt_tokens"},
	keyCompletionTokens: {inUsage, "completion_tokens"},
	keyInputTokens:      {inUsage, "input_tokens"},
	keyOutputTokens:     {inUsage, "output_tokens"},
	keyUsage:            {atTop, "usage"},
	keyResponse:         {atTop, "response"},
}

// schema is how a route reports its token counts.
type schema int

const (
	nativeCounts      schema = iota // prompt_eval_count, eval_count
	openAICounts                    // usage.prompt_tokens, usage.completion_tokens
	inputOutputCounts               // usage.input_tokens, usage.output_tokens
)

// schemaOf returns how route rt reports token counts.
func schemaOf(rt job.Route) schema {
	switch {
	case rt.API == job.Anthropic || rt.Path == "/v1/responses":
		return inputOutputCounts
	case rt.API == job.OpenAI:
		return openAICounts
	}
	return nativeCounts
}

const (
	maxKey    = 32 // longer strings name no member of interest
	maxNumber = 24 // longer numbers are no count
)

// countScanner reads the token counts from one JSON document written to it
// in any pieces, in constant memory. It reads only the members named in
// countKeys, at their depth, with integer values: anything else, valid JSON
// or not, it skips. Its zero value is ready; it reads one document.
type countScanner struct {
	depth      int
	usageDepth int  // the depth of the usage object being read, or 0
	inResponse bool // inside the top-level member "response", an object
	inString   bool
	escaped    bool
	str        [maxKey]byte // the start of the last string
	strLen     int
	tooLong    bool // the last string was longer than str
	strKey     bool // the last token was a string that may name a member: a ':' makes it one
	next       int  // the member whose value comes next, or 0
	inNumber   bool
	number     [maxNumber]byte
	numLen     int
	numKey     int
	val        [numKeys]int64
	has        [numKeys]bool
}

// Write scans p; it never fails.
func (s *countScanner) Write(p []byte) (int, error) {
	for _, c := range p {
		s.step(c)
	}
	return len(p), nil
}

// where returns which members a string at the current depth may name, or
// -1 for none.
func (s *countScanner) where() int {
	switch {
	case s.depth == 1:
		return atTop
	case s.usageDepth != 0 && s.depth == s.usageDepth:
		return inUsage
	case s.depth == 2 && s.inResponse:
		return inResponse
	}
	return -1
}

func (s *countScanner) step(c byte) {
	if s.inString {
		switch {
		case s.escaped:
			s.escaped = false
		case c == '\\':
			s.escaped = true
		case c == '"':
			s.inString = false
			s.strKey = s.where() >= 0 && !s.tooLong
			return
		}
		if s.strLen < maxKey {
			s.str[s.strLen] = c
			s.strLen++
		} else {
			s.tooLong = true
		}
		return
	}
	if s.inNumber {
		if isNumberByte(c) {
			if s.numLen < maxNumber {
				s.number[s.numLen] = c
			}
			s.numLen++
			return
		}
		s.endNumber()
	}
	switch c {
	case ' ', '\t', '\n', '\r':
		return
	case ':':
		s.next = 0
		if s.strKey {
			s.next = s.lookup()
		}
		s.strKey = false
		return
	}
	next := s.next
	s.next, s.strKey = 0, false
	switch c {
	case '"':
		s.inString, s.strLen, s.tooLong = true, 0, false
	case '{', '[':
		s.depth++
		switch {
		case c != '{':
		case next == keyUsage && s.usageDepth == 0:
			s.usageDepth = s.depth
		case next == keyResponse && s.depth == 2:
			s.inResponse = true
		}
	case '}', ']':
		if s.depth > 0 {
			s.depth--
		}
		if s.depth < s.usageDepth {
			s.usageDepth = 0
		}
		if s.depth < 2 {
			s.inResponse = false
		}
	default:
		if next != 0 && next != keyUsage && next != keyResponse && (c == '-' || c >= '0' && c <= '9') {
			s.inNumber, s.numKey, s.numLen = true, next, 1
			s.number[0] = c
		}
	}
}

// lookup returns the member the complete string str names where it stands.
func (s *countScanner) lookup() int {
	name, at := s.str[:s.strLen], s.where()
	for i := 1; i < numKeys; i++ {
		k := countKeys[i]
		if string(name) != k.name {
			continue
		}
		if k.at == at || at == inResponse && i == keyUsage {
			return i
		}
	}
	return 0
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// endNumber takes the number just read as its member's value when it is a
// count: an integer from 0 to maxCount (any non-negative for a duration).
func (s *countScanner) endNumber() {
	s.inNumber = false
	if s.numLen > maxNumber {
		return
	}
	v, err := strconv.ParseInt(string(s.number[:s.numLen]), 10, 64)
	if err != nil || v < 0 || v > maxCount && s.numKey != keyEvalDuration {
		return
	}
	s.val[s.numKey], s.has[s.numKey] = v, true
}

// counts returns what the document reported, read as routes of schema sc
// report it. ok is false when it reported neither count.
func (s *countScanner) counts(sc schema) (c counts, ok bool) {
	if s.inNumber {
		s.endNumber() // A document that is a bare number, or that broke off.
	}
	prompt, completion := keyPromptEvalCount, keyEvalCount
	switch sc {
	case openAICounts:
		prompt, completion = keyPromptTokens, keyCompletionTokens
	case inputOutputCounts:
		prompt, completion = keyInputTokens, keyOutputTokens
	}
	if !s.has[prompt] && !s.has[completion] {
		return counts{}, false
	}
	c = counts{prompt: int(s.val[prompt]), completion: int(s.val[completion])}
	if sc == nativeCounts {
		c.evalDuration = time.Duration(s.val[keyEvalDuration])
	}
	return c, true
}

// usageOf reads the token counts from one whole frame (an NDJSON line, an
// SSE event or a whole JSON body) of a response on a route of schema sc. It
// skips frames that cannot carry them cheaply.
func usageOf(frame []byte, sc schema) (counts, bool) {
	mark := []byte(`eval_count"`)
	if sc != nativeCounts {
		mark = []byte(`"usage"`)
	}
	if !bytes.Contains(frame, mark) {
		return counts{}, false
	}
	var s countScanner
	_, _ = s.Write(job.Payload(frame)) // Never fails.
	return s.counts(sc)
}

// usageMeter reads the token counts of one response as the worker relays
// its frames: of each streamed frame (NDJSON, SSE) on its own, the last to
// report them winning; of any other body across all its pieces.
type usageMeter struct {
	schema  schema
	whole   bool // the body is one document in pieces
	scanner countScanner
	last    counts
	ok      bool
}

func newUsageMeter(sc schema, contentType string) *usageMeter {
	mt, _, _ := mime.ParseMediaType(contentType)
	return &usageMeter{schema: sc, whole: mt != "application/x-ndjson" && mt != "text/event-stream"}
}

// frame reads one relayed frame and reports whether it carried counts (for
// a whole body: always false; see result).
func (m *usageMeter) frame(b []byte) bool {
	if m.whole {
		_, _ = m.scanner.Write(b) // Never fails.
		return false
	}
	c, ok := usageOf(b, m.schema)
	if ok {
		m.last, m.ok = c, true
	}
	return ok
}

// result returns the counts the response reported, if any.
func (m *usageMeter) result() (counts, bool) {
	if m.whole {
		return m.scanner.counts(m.schema)
	}
	return m.last, m.ok
}

// askForUsage makes a streamed /v1/chat/completions request ask for token
// counts (stream_options.include_usage), which Ollama then sends in an
// extra chunk before [DONE]. It reports whether it changed the request: the
// client did not ask, so that chunk must not reach it (usageOnlyChunk). Any
// other request, or one that is not a JSON object Ollama would accept,
// stays as it is.
func askForUsage(route string, body []byte) ([]byte, bool) {
	if route != "/v1/chat/completions" {
		return body, false
	}
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return body, false
	}
	var stream bool
	if json.Unmarshal(req["stream"], &stream) != nil || !stream {
		return body, false // Not streamed: the usage is in the body anyway.
	}
	var opts map[string]json.RawMessage
	if raw, ok := req["stream_options"]; ok && json.Unmarshal(raw, &opts) != nil {
		return body, false // Ollama refuses it; let it say so.
	}
	var include bool
	if raw, ok := opts["include_usage"]; ok && json.Unmarshal(raw, &include) != nil {
		return body, false // Not a bool: the same.
	}
	if include {
		return body, false // The client asked: it gets the chunk.
	}
	if opts == nil {
		opts = map[string]json.RawMessage{}
	}
	opts["include_usage"] = json.RawMessage("true")
	req["stream_options"], _ = json.Marshal(opts) // Raw values always marshal.
	b, err := json.Marshal(req)
	if err != nil {
		return body, false
	}
	return b, true
}

// usageOnlyChunk reports whether an SSE frame is the chunk include_usage
// adds to a streamed chat completion: no choices, and a usage object.
func usageOnlyChunk(frame []byte) bool {
	if !bytes.Contains(frame, []byte(`"usage"`)) {
		return false
	}
	var c struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   json.RawMessage    `json:"usage"`
	}
	if json.Unmarshal(job.Payload(frame), &c) != nil {
		return false
	}
	return c.Choices != nil && len(*c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}
