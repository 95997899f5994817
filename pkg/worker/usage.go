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
// usage.completion_tokens). A streamed response's final frame is one small
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

// The members a countScanner reads: top-level numbers, and numbers of the
// top-level object "usage". Zero is no member.
const (
	keyPromptEvalCount = iota + 1
	keyEvalCount
	keyEvalDuration
	keyPromptTokens
	keyCompletionTokens
	keyUsage // the member "usage" itself, whose value holds the last two
	numKeys
)

var countKeys = [numKeys]struct {
	inUsage bool
	name    string
}{
	keyPromptEvalCount:  {false, "prompt_eval_count"},
	keyEvalCount:        {false, "eval_count"},
	keyEvalDuration:     {false, "eval_duration"},
	keyPromptTokens:     {true, "prompt_tokens"},
	keyCompletionTokens: {true, "completion_tokens"},
	keyUsage:            {false, "usage"},
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
	depth    int
	inUsage  bool // inside the top-level member "usage", an object
	inString bool
	escaped  bool
	str      [maxKey]byte // the start of the last string
	strLen   int
	tooLong  bool // the last string was longer than str
	strKey   bool // the last token was a string that may name a member: a ':' makes it one
	next     int  // the member whose value comes next, or 0
	inNumber bool
	number   [maxNumber]byte
	numLen   int
	numKey   int
	val      [numKeys]int64
	has      [numKeys]bool
}

// Write scans p; it never fails.
func (s *countScanner) Write(p []byte) (int, error) {
	for _, c := range p {
		s.step(c)
	}
	return len(p), nil
}

// memberDepth reports whether a string at the current depth may name a
// member of interest.
func (s *countScanner) memberDepth() bool {
	return s.depth == 1 || s.depth == 2 && s.inUsage
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
			s.strKey = s.memberDepth() && !s.tooLong
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
		if s.depth == 2 && c == '{' && next == keyUsage {
			s.inUsage = true
		}
	case '}', ']':
		if s.depth > 0 {
			s.depth--
		}
		if s.depth < 2 {
			s.inUsage = false
		}
	default:
		if next != 0 && next != keyUsage && (c == '-' || c >= '0' && c <= '9') {
			s.inNumber, s.numKey, s.numLen = true, next, 1
			s.number[0] = c
		}
	}
}

// lookup returns the member the complete string str names at this depth.
func (s *countScanner) lookup() int {
	name := s.str[:s.strLen]
	for i := 1; i < numKeys; i++ {
		if k := countKeys[i]; k.inUsage == (s.depth == 2) && string(name) == k.name {
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

// counts returns what the document reported, read as the route family api
// reports it: top-level counts on native routes, a usage object on OpenAI
// routes. ok is false when it reported neither count.
func (s *countScanner) counts(api job.API) (c counts, ok bool) {
	if s.inNumber {
		s.endNumber() // A document that is a bare number, or that broke off.
	}
	prompt, completion := keyPromptEvalCount, keyEvalCount
	if api == job.OpenAI {
		prompt, completion = keyPromptTokens, keyCompletionTokens
	}
	if !s.has[prompt] && !s.has[completion] {
		return counts{}, false
	}
	c = counts{prompt: int(s.val[prompt]), completion: int(s.val[completion])}
	if api == job.Native {
		c.evalDuration = time.Duration(s.val[keyEvalDuration])
	}
	return c, true
}

// usageOf reads the token counts from one whole frame (an NDJSON line, an
// SSE event or a whole JSON body) of a response on a route of family api. It
// skips frames that cannot carry them cheaply.
func usageOf(frame []byte, api job.API) (counts, bool) {
	mark := []byte(`eval_count"`)
	if api == job.OpenAI {
		mark = []byte(`"usage"`)
	}
	if !bytes.Contains(frame, mark) {
		return counts{}, false
	}
	var s countScanner
	_, _ = s.Write(job.Payload(frame)) // Never fails.
	return s.counts(api)
}

// usageMeter reads the token counts of one response as the worker relays
// its frames: of each streamed frame (NDJSON, SSE) on its own, the last to
// report them winning; of any other body across all its pieces.
type usageMeter struct {
	api     job.API
	whole   bool // the body is one document in pieces
	scanner countScanner
	last    counts
	ok      bool
}

func newUsageMeter(api job.API, contentType string) *usageMeter {
	mt, _, _ := mime.ParseMediaType(contentType)
	return &usageMeter{api: api, whole: mt != "application/x-ndjson" && mt != "text/event-stream"}
}

// frame reads one relayed frame and reports whether it carried counts (for
// a whole body: always false; see result).
func (m *usageMeter) frame(b []byte) bool {
	if m.whole {
		_, _ = m.scanner.Write(b) // Never fails.
		return false
	}
	c, ok := usageOf(b, m.api)
	if ok {
		m.last, m.ok = c, true
	}
	return ok
}

// result returns the counts the response reported, if any.
func (m *usageMeter) result() (counts, bool) {
	if m.whole {
		return m.scanner.counts(m.api)
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
