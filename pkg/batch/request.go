package batch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// maxCustomID bounds a custom_id, which travels in a header.
const maxCustomID = 1024

// Request is one valid line of a batch file.
type Request struct {
	CustomID string
	Route    string
	Model    string // canonical
	Body     []byte // the line's body, with "stream": false on streaming routes
	// Window is the completion window the line asks for, 0 if none
	// ("completion_window": "24h" next to custom_id; docs/batch.md).
	Window time.Duration
}

// LineError says why a line of a batch file was not queued.
type LineError struct {
	Line     int    `json:"line"`
	CustomID string `json:"custom_id,omitempty"`
	Msg      string `json:"error"`
}

func (e *LineError) Error() string {
	if e.CustomID != "" {
		return fmt.Sprintf("line %d (custom_id %q): %s", e.Line, e.CustomID, e.Msg)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// ParseLine parses line n of a batch file in the OpenAI Batch API input
// format, {"custom_id", "method", "url", "body"}. maxBody bounds the size of
// the body as queued. The error, if any, is a *LineError.
func ParseLine(n int, line []byte, maxBody int) (Request, error) {
	return parseLine(n, line, maxBody, true)
}

// streamFalse is what forcing "stream": false may add to a body.
const streamFalse = len(`,"stream":false`)

// parseLine is ParseLine; without build, it only validates the line (the
// first pass over a file) and returns no Body.
func parseLine(n int, line []byte, maxBody int, build bool) (Request, error) {
	var in struct {
		CustomID json.RawMessage `json:"custom_id"`
		Method   json.RawMessage `json:"method"`
		URL      json.RawMessage `json:"url"`
		Body     json.RawMessage `json:"body"`
		Window   json.RawMessage `json:"completion_window"`
	}
	bad := func(format string, a ...any) (Request, error) {
		return Request{}, &LineError{Line: n, Msg: fmt.Sprintf(format, a...)}
	}
	if err := json.Unmarshal(line, &in); err != nil {
		return bad("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	var r Request
	customID, ok := jsonString(in.CustomID)
	switch {
	case !ok:
		return bad("custom_id must be a string")
	case customID == "":
		return bad("missing custom_id")
	case len(customID) > maxCustomID:
		return bad("custom_id is longer than %d bytes", maxCustomID)
	case strings.ContainsFunc(customID, func(c rune) bool { return c < ' ' || c == 0x7f }):
		return bad("custom_id %q contains control characters", customID)
	}
	r.CustomID = customID
	fail := func(format string, a ...any) (Request, error) {
		return Request{}, &LineError{Line: n, CustomID: customID, Msg: fmt.Sprintf(format, a...)}
	}
	if method, ok := jsonString(in.Method); !ok || method != "" && !strings.EqualFold(method, "POST") {
		return fail("method %s is not supported; want \"POST\"", in.Method)
	}
	if window, ok := jsonString(in.Window); !ok {
		return fail("completion_window must be a string such as \"24h\"")
	} else if window != "" {
		d, err := ParseWindow(window)
		if err != nil {
			return fail("%v", err)
		}
		r.Window = d
	}
	url, ok := jsonString(in.URL)
	switch {
	case !ok:
		return fail("url must be a string")
	case url == "":
		return fail("missing url")
	}
	rt, known := job.LookupRoute(url)
	streams := rt.Streams
	if !known || !rt.Batch {
		return fail("unknown url %q; want one of %s", url, strings.Join(routeNames(), ", "))
	}
	r.Route = url
	if len(bytes.TrimSpace(in.Body)) == 0 || bytes.Equal(in.Body, []byte("null")) {
		return fail("missing body")
	}
	var head struct {
		Model json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(in.Body, &head); err != nil {
		return fail("body must be a JSON object")
	}
	name, ok := jsonString(head.Model)
	if !ok || name == "" {
		return fail("body has no model")
	}
	model, err := job.CanonicalModel(name)
	if err != nil {
		return fail("invalid model %q", name)
	}
	r.Model = model
	// The body as queued is at most this long: compacting and re-encoding
	// only shorten it.
	if size := len(in.Body) + streamFalse; size > maxBody {
		return fail("body is %d bytes; the server takes at most %d", size, maxBody)
	}
	if !build {
		return r, nil
	}
	var buf bytes.Buffer
	if streams {
		var body map[string]json.RawMessage
		if err := json.Unmarshal(in.Body, &body); err != nil {
			return fail("body must be a JSON object")
		}
		body["stream"] = json.RawMessage("false")
		delete(body, "stream_options") // OpenAI rejects stream_options without stream.
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // Keep the client's bytes: no \u003c for <.
		if err := enc.Encode(body); err != nil {
			return fail("body: %v", err)
		}
		r.Body = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	} else {
		if err := json.Compact(&buf, in.Body); err != nil {
			return fail("body: %v", err)
		}
		r.Body = buf.Bytes()
	}
	return r, nil
}

// jsonString decodes a JSON string; absent means "".
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func routeNames() []string {
	var out []string
	for _, r := range job.Routes() {
		if r.Batch {
			out = append(out, r.Path)
		}
	}
	sort.Strings(out)
	return out
}
