package batch

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		wantErr string // substring; empty for a valid line
		route   string
		model   string
		body    string // the body as queued, when valid
	}{
		{name: "generate gets stream false", line: `{"custom_id":"a","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"hi","stream":true}}`,
			route: "/api/generate", model: "llama3.2:latest", body: `{"model":"llama3.2","prompt":"hi","stream":false}`},
		{name: "chat completions lose stream_options", line: `{"custom_id":"a","url":"/v1/chat/completions","body":{"model":"Qwen2.5:0.5b","messages":[],"stream":true,"stream_options":{"include_usage":true}}}`,
			route: "/v1/chat/completions", model: "qwen2.5:0.5b", body: `{"messages":[],"model":"Qwen2.5:0.5b","stream":false}`},
		{name: "embeddings unchanged", line: `{"custom_id":"a","method":"post","url":"/v1/embeddings","body":{ "model": "nomic-embed-text", "input": "x" }}`,
			route: "/v1/embeddings", model: "nomic-embed-text:latest", body: `{"model":"nomic-embed-text","input":"x"}`},
		{name: "malformed", line: `{"custom_id":"a",`, wantErr: "malformed JSON"},
		{name: "not an object", line: `[1,2]`, wantErr: "malformed JSON"},
		{name: "no custom_id", line: `{"url":"/api/generate","body":{"model":"m"}}`, wantErr: "missing custom_id"},
		{name: "numeric custom_id", line: `{"custom_id":7,"url":"/api/generate","body":{"model":"m"}}`, wantErr: "custom_id must be a string"},
		{name: "newline in custom_id", line: `{"custom_id":"a\nb","url":"/api/generate","body":{"model":"m"}}`, wantErr: "control characters"},
		{name: "unknown url", line: `{"custom_id":"a","url":"/api/pull","body":{"model":"m"}}`, wantErr: `unknown url "/api/pull"`},
		{name: "no url", line: `{"custom_id":"a","body":{"model":"m"}}`, wantErr: "missing url"},
		{name: "GET", line: `{"custom_id":"a","method":"GET","url":"/api/generate","body":{"model":"m"}}`, wantErr: "method \"GET\" is not supported"},
		{name: "no body", line: `{"custom_id":"a","url":"/api/generate"}`, wantErr: "missing body"},
		{name: "body not an object", line: `{"custom_id":"a","url":"/api/generate","body":"hi"}`, wantErr: "body must be a JSON object"},
		{name: "no model", line: `{"custom_id":"a","url":"/api/generate","body":{"prompt":"x"}}`, wantErr: "body has no model"},
		{name: "bad model", line: `{"custom_id":"a","url":"/api/generate","body":{"model":"a b"}}`, wantErr: `invalid model "a b"`},
		{name: "too big", line: `{"custom_id":"a","url":"/api/generate","body":{"model":"m","prompt":"` + strings.Repeat("x", 200) + `"}}`, wantErr: "the server takes at most 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxBody := 1 << 20
			if tt.name == "too big" {
				maxBody = 100
			}
			req, err := ParseLine(7, []byte(tt.line), maxBody)
			if tt.wantErr != "" {
				var le *LineError
				if !errors.As(err, &le) || le.Line != 7 || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseLine = %+v, %v; want a line 7 error containing %q", req, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLine: %v", err)
			}
			if req.CustomID != "a" || req.Route != tt.route || req.Model != tt.model || !sameJSON(req.Body, tt.body) {
				t.Errorf("ParseLine = %q %q %q %s; want a %q %q %s", req.CustomID, req.Route, req.Model, req.Body, tt.route, tt.model, tt.body)
			}
		})
	}
}

func sameJSON(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func TestScanReportsLinesByNumber(t *testing.T) {
	file := strings.Join([]string{
		`{"custom_id":"a","url":"/api/generate","body":{"model":"m","prompt":"1"}}`,
		``,
		`{"custom_id":"b","url":"/api/nope","body":{"model":"m"}}`,
		`{"custom_id":"a","url":"/api/generate","body":{"model":"m","prompt":"2"}}`,
		"\r",
		`{"custom_id":"c","url":"/api/chat","body":{"model":"other:7b","messages":[]}}`,
		`{"custom_id":"d","url":"/api/generate","body":{"model":"m","prompt":"` + strings.Repeat("y", 300) + `"}}`,
		`{"url":"/api/generate","body":{"model":"m"}}`,
		strings.Repeat(" ", 70000),
		`{"custom_id":"e","url":"/api/generate","body":{"model":"m","prompt":"last line, no newline"}}`,
	}, "\r\n")
	var got []string
	sc, err := scan(strings.NewReader(file), 200, func(le *LineError) { got = append(got, le.Error()) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`line 3 (custom_id "b"): unknown url "/api/nope"; want one of /api/chat, /api/embed, /api/generate, /v1/chat/completions, /v1/completions, /v1/embeddings`,
		`line 4 (custom_id "a"): custom_id repeats line 1`,
		`line 7 (custom_id "d"): body is 340 bytes; the server takes at most 200`,
		`line 8: missing custom_id`,
		`line 9: line is longer than 65736 bytes`,
	}
	if sc.Lines != 10 || sc.Requests != 3 || sc.Invalid != 4 || sc.Duplicates != 1 ||
		sc.Models["m:latest"] != 2 || sc.Models["other:7b"] != 1 || len(sc.Errors) != 5 {
		t.Errorf("scan = %+v", sc)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("reported:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// FuzzParseLine feeds arbitrary lines to the batch file parser: a line is
// either refused with a *LineError that names it, or queued as a body that
// is a JSON object for a batch route and a canonical model, with streaming
// turned off where the route would stream.
func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"hi","stream":true}}`))
	f.Add([]byte(`{"custom_id":"b","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`))
	f.Add([]byte(`{"custom_id":"c","url":"/v1/embeddings","body":{"model":"m","input":"x"}}`))
	f.Add([]byte(`{"custom_id":"d","url":"/api/chat","body":{"model":" x ","stream":"no"}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseLine(7, line, 1<<16)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line != 7 || le.Msg == "" {
				t.Fatalf("error %v is not a LineError for line 7", err)
			}
			return
		}
		rt, ok := job.LookupRoute(req.Route)
		if !ok || !rt.Batch {
			t.Fatalf("queued for route %q", req.Route)
		}
		if c, err := job.CanonicalModel(req.Model); err != nil || c != req.Model {
			t.Fatalf("model %q is not canonical", req.Model)
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(req.Body, &body); err != nil {
			t.Fatalf("queued body %q is not a JSON object: %v", req.Body, err)
		}
		if len(req.Body) > 1<<16 {
			t.Fatalf("queued body of %d bytes over the bound", len(req.Body))
		}
		if rt.Streams && string(body["stream"]) != "false" {
			t.Fatalf("streaming route %s queued with stream %s", req.Route, body["stream"])
		}
		if req.CustomID == "" {
			t.Fatal("no custom_id")
		}
	})
}
