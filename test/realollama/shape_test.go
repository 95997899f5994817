package realollama_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// An observation is what the suite compares of one answer: its status,
// content type, the headers that matter, and the shape of its body.
type observation struct {
	Status      int
	ContentType string
	Allow       string // a 405's Allow header, its methods sorted
	Location    string // a redirect's Location header
	CORS        string // for a request with an Origin: the CORS headers, lists sorted
	raw         []byte
	head        bool // a HEAD's answer has no body to compare
}

// body returns the shape of each frame of the body, consecutive repeats
// collapsed, without the top-level keys in drop.
func (o observation) body(drop []string) []string {
	if o.head {
		return nil
	}
	return frames(o.ContentType, o.raw, drop)
}

// maxBody bounds what the suite reads of one answer.
const maxBody = 4 << 20

// client follows no redirects (a redirect is an answer to compare) and
// bounds each answer, so that one that never ends fails its case.
var client = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func observe(t *testing.T, base string, c tc, target string) observation {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(strings.ReplaceAll(c.body, "$T", marker(target)))
	}
	req, err := http.NewRequestWithContext(t.Context(), c.method, base+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", target, c.method, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		t.Fatalf("%s %s %s: read the answer: %v", target, c.method, c.path, err)
	}
	if strings.Contains(c.body, "$T") {
		// The model names made for the target read the same in every answer.
		b = bytes.ReplaceAll(b, []byte(marker(target)), []byte("$T"))
	}
	o := observation{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), raw: b, head: c.method == http.MethodHead}
	if resp.StatusCode == http.StatusMethodNotAllowed {
		o.Allow = sortedList(resp.Header.Get("Allow"))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		o.Location = resp.Header.Get("Location")
	}
	if c.header["Origin"] != "" {
		var cors []string
		for _, h := range corsHeaders {
			if v := resp.Header.Values(h); len(v) > 0 {
				cors = append(cors, h+": "+sortedList(strings.Join(v, ",")))
			}
		}
		o.CORS = strings.Join(cors, "; ")
	}
	return o
}

// marker is what $T in a request body becomes for target.
func marker(target string) string { return "t-" + target }

// corsHeaders are compared on answers to requests from a browser.
var corsHeaders = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
	"Access-Control-Max-Age", "Vary"}

func sortedList(h string) string {
	var out []string
	for _, m := range strings.Split(h, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// frames splits a body into NDJSON lines, server-sent events or one whole
// body by its content type, renders each as its shape, and collapses
// consecutive equal shapes into one: a stream of text frames is one shape,
// however many tokens it took. The top-level keys in drop are left out.
func frames(contentType string, b []byte, drop []string) []string {
	var out []string
	add := func(s string) {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	switch {
	case strings.HasPrefix(contentType, "application/x-ndjson"):
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, maxBody)
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				add(shapeOf(line, drop))
			}
		}
	case strings.HasPrefix(contentType, "text/event-stream"):
		for _, ev := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
			if ev = strings.TrimSpace(ev); ev == "" {
				continue
			}
			var name, data []string
			for _, line := range strings.Split(ev, "\n") {
				switch {
				case strings.HasPrefix(line, "event:"):
					name = append(name, strings.TrimSpace(strings.TrimPrefix(line, "event:")))
				case strings.HasPrefix(line, "data:"):
					data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
				default:
					name = append(name, "line "+line)
				}
			}
			s := shapeOf([]byte(strings.Join(data, "\n")), drop)
			if len(name) > 0 {
				s = "event " + strings.Join(name, ",") + " " + s
			}
			add(s)
		}
	case strings.HasPrefix(contentType, "application/json"):
		add(shapeOf(b, drop))
	default:
		add(fmt.Sprintf("%q", b)) // Plain text: compared as it is.
	}
	return out
}

// kept are the keys whose string values are deterministic and compared as
// they are: error messages, types and codes, model names, roles, finish
// reasons and stream event types. Every other string is compared by type
// alone: the tiny models' text is random.
var kept = map[string]bool{
	"error": true, "message": true, "type": true, "code": true, "param": true,
	"object": true, "model": true, "name": true, "role": true, "status": true,
	"done_reason": true, "finish_reason": true, "stop_reason": true, "version": true,
}

// listings are the keys of arrays whose order is no part of the answer
// (which models a listing shows first): their shapes are sorted.
var listings = map[string]bool{"models": true, "data": true}

// shapeOf renders a JSON text as its shape: objects with every key and the
// shape of its value, arrays as the distinct shapes of their elements (in
// order, sorted for listings), strings as "<string>" unless their key is
// kept, numbers as "<number>", booleans and null as they are. Text that is
// not JSON is kept as it is. The top-level keys in drop are left out.
func shapeOf(b []byte, drop []string) string {
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || d.More() {
		return fmt.Sprintf("%q", b)
	}
	if m, ok := v.(map[string]any); ok {
		for _, k := range drop {
			delete(m, k)
		}
	}
	return marshal(shape("", v))
}

// marshal renders a shape as JSON, keys sorted, without HTML escapes.
func marshal(v any) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(v) // Shapes are maps, slices, strings, bools and nil: they always encode.
	return strings.TrimSuffix(b.String(), "\n")
}

func shape(key string, v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = shape(k, e)
		}
		return m
	case []any:
		var elems []any
		seen := map[string]bool{}
		for _, e := range x {
			s := shape(key, e)
			if k := marshal(s); !seen[k] {
				seen[k] = true
				elems = append(elems, s)
			}
		}
		if elems == nil {
			return []any{}
		}
		if listings[key] {
			slices.SortFunc(elems, func(a, b any) int { return strings.Compare(marshal(a), marshal(b)) })
		}
		return elems
	case string:
		if kept[key] {
			return x
		}
		return "<string>"
	case json.Number:
		return "<number>"
	default: // bool, nil
		return x
	}
}

// differences lists how got differs from want, or nothing; the top-level
// keys in drop are not compared.
func differences(got, want observation, drop []string) []string {
	var d []string
	if got.Status != want.Status {
		d = append(d, fmt.Sprintf("status %d, real Ollama %d", got.Status, want.Status))
	}
	if got.ContentType != want.ContentType {
		d = append(d, fmt.Sprintf("Content-Type %q, real Ollama %q", got.ContentType, want.ContentType))
	}
	if got.Allow != want.Allow {
		d = append(d, fmt.Sprintf("Allow %q, real Ollama %q", got.Allow, want.Allow))
	}
	if got.CORS != want.CORS {
		d = append(d, fmt.Sprintf("CORS headers %q, real Ollama %q", got.CORS, want.CORS))
	}
	if got.Location != want.Location {
		d = append(d, fmt.Sprintf("Location %q, real Ollama %q", got.Location, want.Location))
	}
	if g, w := got.body(drop), want.body(drop); !slices.Equal(g, w) {
		d = append(d, fmt.Sprintf("body shape\n      got: %s\n     real: %s", strings.Join(g, "\n           "), strings.Join(w, "\n           ")))
	}
	return d
}

// TestShape checks the comparison itself, without any Ollama: what it
// keeps, what it reduces to a type, and how it collapses a stream.
func TestShape(t *testing.T) {
	cases := []struct {
		name, contentType, body string
		drop                    []string
		want                    []string
	}{
		{"error kept", "application/json; charset=utf-8", `{"error":"model 'x' not found"}`,
			nil, []string{`{"error":"model 'x' not found"}`}},
		{"text typed", "application/json", `{"model":"tiny","response":"ab c","done":true,"eval_count":3,"context":[1,2,3]}`,
			nil, []string{`{"context":["<number>"],"done":true,"eval_count":"<number>","model":"tiny","response":"<string>"}`}},
		{"empty array", "application/json", `{"models":[]}`, nil, []string{`{"models":[]}`}},
		{"null", "application/json", `{"data":null}`, nil, []string{`{"data":null}`}},
		{"ndjson collapsed", "application/x-ndjson",
			"{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n{\"response\":\"\",\"done\":true,\"done_reason\":\"length\"}\n",
			nil, []string{`{"done":false,"response":"<string>"}`, `{"done":true,"done_reason":"length","response":"<string>"}`}},
		{"sse named", "text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
			nil, []string{`event message_start {"type":"message_start"}`, `event ping {"type":"ping"}`}},
		{"sse done", "text/event-stream", "data: {\"id\":\"x\"}\n\ndata: {\"id\":\"y\"}\n\ndata: [DONE]\n\n",
			nil, []string{`{"id":"<string>"}`, `"[DONE]"`}},
		{"plain", "text/plain", "404 page not found", nil, []string{`"404 page not found"`}},
		{"not json", "application/json", `{"a":`, nil, []string{`"{\"a\":"`}},
		{"listing sorted", "application/json", `{"models":[{"name":"b"},{"name":"a"}],"list":[{"name":"b"},{"name":"a"}]}`, nil,
			[]string{`{"list":[{"name":"b"},{"name":"a"}],"models":[{"name":"a"},{"name":"b"}]}`}},
		{"dropped", "application/json", `{"license":"x","model_info":{"a":1},"template":"t"}`, []string{"license", "model_info"},
			[]string{`{"template":"<string>"}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := frames(c.contentType, []byte(c.body), c.drop); !slices.Equal(got, c.want) {
				t.Errorf("frames:\n got %q\nwant %q", got, c.want)
			}
		})
	}
	a := observation{Status: 200, ContentType: "application/json", raw: []byte(`{"a":"x"}`)}
	b := a
	b.raw = []byte(`{"a":"y","b":"z"}`)
	if d := differences(a, a, nil); len(d) != 0 {
		t.Errorf("an observation differs from itself: %v", d)
	}
	if d := differences(a, b, nil); len(d) != 1 || !strings.Contains(d[0], "body shape") {
		t.Errorf("a missing field: %v, want one body shape difference", d)
	}
	if d := differences(a, b, []string{"b"}); len(d) != 0 {
		t.Errorf("a missing field that is dropped: %v, want none", d)
	}
	b.Status = 404
	if d := differences(a, b, []string{"b"}); len(d) != 1 || !strings.Contains(d[0], "status 200, real Ollama 404") {
		t.Errorf("another status: %v, want one status difference", d)
	}
}
