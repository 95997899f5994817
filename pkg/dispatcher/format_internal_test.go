package dispatcher

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// requestID is the random request_id of Anthropic's error bodies.
var requestID = regexp.MustCompile(`"request_id":"req_[0-9a-f]{24}"`)

// TestMessagesAndResponsesRefusals: bad input to /v1/messages and
// /v1/responses gets what a real Ollama 0.32.15 answers (each body recorded
// from one with curl; the random request_id masked).
func TestMessagesAndResponsesRefusals(t *testing.T) {
	const (
		anthropicJSON = "application/json; charset=utf-8" // gin's AbortWithStatusJSON
		forwardedJSON = "application/json"                // the middleware's writeError
	)
	tests := []struct {
		name, route, body string
		status            int
		contentType, want string
	}{
		{"messages empty body", "/v1/messages", ``, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"EOF"},"request_id":"req"}`},
		{"messages malformed", "/v1/messages", `{`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"unexpected EOF"},"request_id":"req"}`},
		{"messages wrong type", "/v1/messages", `{"model":5}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"json: cannot unmarshal number into Go struct field MessagesRequest.model of type string"},"request_id":"req"}`},
		{"messages no model", "/v1/messages", `{"max_tokens":5}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"model is required"},"request_id":"req"}`},
		{"messages no max_tokens", "/v1/messages", `{"model":"tiny"}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens is required and must be positive"},"request_id":"req"}`},
		{"messages no messages", "/v1/messages", `{"model":"tiny","max_tokens":5}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"messages is required"},"request_id":"req"}`},
		{"messages image by url", "/v1/messages", `{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"x"}}]}]}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"invalid image source type: url. Only base64 images are supported."},"request_id":"req"}`},
		{"messages tool_use without id", "/v1/messages", `{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","name":"x"}]}]}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"tool_use block missing required 'id' field"},"request_id":"req"}`},
		{"messages bad input_schema", "/v1/messages", `{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":5}]}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"invalid input_schema for tool \"f\": json: cannot unmarshal number into Go value of type api.ToolFunctionParameters"},"request_id":"req"}`},
		{"messages content a number", "/v1/messages", `{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":5}]}`, 400, anthropicJSON,
			`{"type":"error","error":{"type":"invalid_request_error","message":"json: cannot unmarshal number into Go struct field MessagesRequest.messages of type []anthropic.ContentBlock"},"request_id":"req"}`},
		{"responses empty body", "/v1/responses", ``, 400, anthropicJSON,
			`{"error":{"message":"EOF","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses malformed", "/v1/responses", `{`, 400, anthropicJSON,
			`{"error":{"message":"unexpected EOF","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses wrong type", "/v1/responses", `{"model":5}`, 400, anthropicJSON,
			`{"error":{"message":"json: cannot unmarshal number into Go struct field ResponsesRequest.model of type string","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses no model", "/v1/responses", `{"input":"x"}`, 400, forwardedJSON,
			`{"error":{"message":"model is required","type":"invalid_request_error","param":null,"code":null}}` + "\n"},
		{"responses input a number", "/v1/responses", `{"model":"tiny","input":5}`, 400, anthropicJSON,
			`{"error":{"message":"input must be a string or array: json: cannot unmarshal number into Go value of type []json.RawMessage","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses unknown item", "/v1/responses", `{"model":"tiny","input":[{"type":"foo"}]}`, 400, anthropicJSON,
			`{"error":{"message":"input[0]: unknown input item type: \"foo\"","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses item without type", "/v1/responses", `{"model":"tiny","input":[{"content":"x"}]}`, 400, anthropicJSON,
			`{"error":{"message":"input[0]: input item missing required 'type' field","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses file input", "/v1/responses", `{"model":"tiny","input":[{"role":"user","content":[{"type":"input_file","file_data":"x"}]}]}`, 400, anthropicJSON,
			`{"error":{"message":"file inputs are not currently supported","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses bad effort", "/v1/responses", `{"model":"tiny","input":"x","reasoning":{"effort":"bogus"}}`, 400, anthropicJSON,
			`{"error":{"message":"invalid reasoning value: \"bogus\" (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")","type":"invalid_request_error","param":null,"code":null}}`},
		{"responses bad arguments", "/v1/responses", `{"model":"tiny","input":[{"type":"function_call","call_id":"a","name":"f","arguments":"{"}]}`, 400, anthropicJSON,
			`{"error":{"message":"failed to parse function call arguments: unexpected end of JSON input","type":"invalid_request_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if _, ok := validate(rec, tt.route, []byte(tt.body)); ok {
				t.Fatalf("accepted %s", tt.body)
			}
			body := requestID.ReplaceAllString(rec.Body.String(), `"request_id":"req"`)
			if rec.Code != tt.status || rec.Header().Get("Content-Type") != tt.contentType || body != tt.want {
				t.Errorf("got %d %q %s\nwant %d %q %s", rec.Code, rec.Header().Get("Content-Type"), body, tt.status, tt.contentType, tt.want)
			}
			if tt.route == "/v1/messages" && !requestID.MatchString(rec.Body.String()) {
				t.Errorf("no request_id in %s", rec.Body)
			}
		})
	}
	for _, ok := range []struct{ route, body, model string }{
		{"/v1/messages", `{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "tiny"},
		{"/v1/responses", `{"model":"tiny"}`, "tiny"}, // Ollama answers an empty answer.
		{"/v1/responses", `{"model":"tiny","input":"x","max_output_tokens":0}`, "tiny"},
	} {
		rec := httptest.NewRecorder()
		if model, accepted := validate(rec, ok.route, []byte(ok.body)); !accepted || model != ok.model {
			t.Errorf("%s %s: %q, %v (%d %s); want it accepted", ok.route, ok.body, model, accepted, rec.Code, rec.Body)
		}
	}
}

// TestErrorShapes: each error the dispatcher writes itself is in the route's
// own shape, as Ollama 0.32.15 writes that status there.
func TestErrorShapes(t *testing.T) {
	tests := []struct {
		name        string
		write       func(http.ResponseWriter)
		status      int
		contentType string
		want        string
	}{
		{"messages 404 from the handler", func(w http.ResponseWriter) { anthropicAPI.failForwarded(w, 404, "model 'nope' not found") }, 404, "application/json",
			`{"type":"error","error":{"type":"not_found_error","message":"model 'nope' not found"},"request_id":"req"}` + "\n"},
		{"messages 503", func(w http.ResponseWriter) { anthropicAPI.failForwarded(w, 503, "queue unavailable") }, 503, "application/json",
			`{"type":"error","error":{"type":"overloaded_error","message":"queue unavailable"},"request_id":"req"}` + "\n"},
		{"messages 401", func(w http.ResponseWriter) { anthropicAPI.refuse(w, 401, "no key") }, 401, "application/json; charset=utf-8",
			`{"type":"error","error":{"type":"authentication_error","message":"no key"},"request_id":"req"}`},
		{"messages 429", func(w http.ResponseWriter) { anthropicAPI.refuse(w, 429, "slow down") }, 429, "application/json; charset=utf-8",
			`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req"}`},
		{"messages 413", func(w http.ResponseWriter) { anthropicAPI.fail(w, 413, "too large") }, 413, "application/json; charset=utf-8",
			`{"type":"error","error":{"type":"api_error","message":"too large"},"request_id":"req"}`},
		{"responses 404 from the handler", func(w http.ResponseWriter) { responses.failForwarded(w, 404, "model 'nope' not found") }, 404, "application/json",
			`{"error":{"message":"model 'nope' not found","type":"not_found_error","param":null,"code":null}}` + "\n"},
		{"responses 503", func(w http.ResponseWriter) { responses.failForwarded(w, 503, "queue unavailable") }, 503, "application/json",
			`{"error":{"message":"queue unavailable","type":"api_error","param":null,"code":null}}` + "\n"},
		{"chat completions 404 from the handler", func(w http.ResponseWriter) { openAI.failForwarded(w, 404, "model 'nope' not found") }, 404, "application/json",
			`{"error":{"message":"model 'nope' not found","type":"not_found_error","param":null,"code":null}}` + "\n"},
		{"responses 401", func(w http.ResponseWriter) { responses.refuse(w, 401, "no key") }, 401, "application/json; charset=utf-8",
			`{"error":{"message":"no key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.write(rec)
			body := requestID.ReplaceAllString(rec.Body.String(), `"request_id":"req"`)
			if rec.Code != tt.status || rec.Header().Get("Content-Type") != tt.contentType || body != tt.want {
				t.Errorf("got %d %q %s\nwant %d %q %s", rec.Code, rec.Header().Get("Content-Type"), body, tt.status, tt.contentType, tt.want)
			}
		})
	}
}

func TestFailMidStream(t *testing.T) {
	first := []byte("event: response.created\ndata: {\"response\":{\"id\":\"resp_7\",\"model\":\"tiny\",\"usage\":null},\"sequence_number\":0,\"type\":\"response.created\"}\n\n")
	last := []byte("event: response.output_text.delta\ndata: {\"delta\":\"x\",\"sequence_number\":6,\"type\":\"response.output_text.delta\"}\n\n")
	tests := []struct {
		name        string
		f           format
		contentType string
		want        string
	}{
		{"native", native, "application/x-ndjson", `{"error":"lost"}` + "\n"},
		{"chat completions", openAI, "text/event-stream", `data: {"error":{"message":"lost","type":"api_error","param":null,"code":null}}` + "\n\n"},
		{"messages", anthropicAPI, "text/event-stream", "event: error\ndata: " + `{"type":"error","error":{"type":"api_error","message":"lost"}}` + "\n\n"},
		{"responses", responses, "text/event-stream", "event: response.failed\ndata: " +
			`{"response":{"error":{"code":"api_error","message":"lost"},"id":"resp_7","model":"tiny","object":"response","output":[],"status":"failed"},"sequence_number":7,"type":"response.failed"}` + "\n\n"},
		{"messages not streamed", anthropicAPI, "application/json", `{"error":"lost"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.f.failMidStream(rec, tt.contentType, "lost", first, last)
			if rec.Body.String() != tt.want {
				t.Errorf("got  %q\nwant %q", rec.Body, tt.want)
			}
		})
	}
	for _, c := range []struct {
		f    format
		last string
		want bool
	}{
		{openAI, "data: [DONE]\n\n", true},
		{openAI, "data: {}\n\n", false},
		{anthropicAPI, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", true},
		{anthropicAPI, "event: message_delta\ndata: {}\n\n", false},
		{responses, "event: response.completed\ndata: {}\n\n", true},
		{responses, "event: response.output_item.done\ndata: {}\n\n", false},
	} {
		if got := c.f.complete([]byte(c.last)); got != c.want {
			t.Errorf("format %d: complete(%q) = %v, want %v", c.f, c.last, got, c.want)
		}
	}
}

func TestDecompress(t *testing.T) {
	enc, _ := zstd.NewWriter(nil)
	body := enc.EncodeAll([]byte(`{"model":"tiny","input":"hi"}`), nil)
	rec := httptest.NewRecorder()
	got, ok := decompress(rec, responses, body, 1<<20)
	if !ok || string(got) != `{"model":"tiny","input":"hi"}` {
		t.Fatalf("decompress = %q, %v (%d %s)", got, ok, rec.Code, rec.Body)
	}
	tests := []struct {
		name  string
		body  []byte
		limit int64
		code  int
		want  string
	}{
		// As a real Ollama 0.32.15 answers (its cloud passthrough middleware).
		{"not zstd", []byte(`{"model":"tiny"}`), 1 << 30, 400, `{"error":"invalid input: magic number mismatch"}`},
		{"more than 20 MiB", enc.EncodeAll(make([]byte, 30_000_000), nil), 1 << 30, 400, `{"error":"http: request body too large"}`},
		// The dispatcher's own limit, as on a body sent as it is.
		{"more than the body limit", enc.EncodeAll(make([]byte, 4096), nil), 1024, 413,
			`{"error":{"message":"request body too large: the limit is 1024 bytes","type":"api_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		if _, ok := decompress(rec, responses, tt.body, tt.limit); ok || rec.Code != tt.code || rec.Body.String() != tt.want {
			t.Errorf("%s: %v, %d %s; want %d %s", tt.name, ok, rec.Code, rec.Body, tt.code, tt.want)
		}
	}
}
