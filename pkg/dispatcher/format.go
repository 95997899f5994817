package dispatcher

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// format is the API family of a route: it decides the shape of errors.
type format int

const (
	native       format = iota // Ollama's /api routes: {"error": "..."}
	openAI                     // /v1 routes: {"error": {"message", "type", "param", "code"}}
	anthropicAPI               // /v1/messages: {"type": "error", "error": {"type", "message"}, "request_id"}
	responses                  // /v1/responses: openAI's errors, and its own events mid-stream
)

// formatOf returns the API family of a request path.
func formatOf(path string) format {
	switch {
	case path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/"):
		return anthropicAPI
	case path == "/v1/responses":
		return responses
	case strings.HasPrefix(path, "/v1/"):
		return openAI
	}
	return native
}

// refuse writes a refusal of access (401, 403) or of a rate limit (429) in
// the shape the route's own API uses for it, so each SDK raises its own
// error class: OpenAI's AuthenticationError, PermissionDeniedError and
// RateLimitError, Anthropic's likewise, Ollama's ResponseError.
func (f format) refuse(w http.ResponseWriter, status int, msg string) {
	switch f {
	case openAI, responses:
		typ, code := "invalid_request_error", "invalid_api_key"
		switch status {
		case http.StatusForbidden:
			code = "permission_denied"
		case http.StatusTooManyRequests:
			typ, code = "requests", "rate_limit_exceeded"
		}
		writeJSON(w, status, openai.ErrorResponse{Error: openai.Error{Message: msg, Type: typ, Code: &code}})
	case anthropicAPI:
		// authentication_error, permission_error, rate_limit_error.
		writeJSON(w, status, anthropic.NewError(status, msg))
	default:
		writeError(w, status, msg)
	}
}

// fail writes an error the dispatcher itself detected before forwarding, as
// Ollama's handlers (native) or its OpenAI and Anthropic middleware would:
// they reject bad input with gin's AbortWithStatusJSON and the error type
// that matches the status.
func (f format) fail(w http.ResponseWriter, status int, msg string) {
	switch f {
	case native:
		writeError(w, status, msg)
	case anthropicAPI:
		writeJSON(w, status, anthropic.NewError(status, msg))
	default:
		writeJSON(w, status, openai.NewError(status, msg))
	}
}

// failForwarded writes an error that Ollama's native handler would have
// produced behind the OpenAI or Anthropic middleware: the native status, the
// error type that matches it (since Ollama 0.32: for OpenAI
// invalid_request_error for 400, not_found_error for 404, api_error
// otherwise), and the middleware's bare application/json with json.Encoder's
// newline (middleware/openai.go and anthropic.go, writeError).
func (f format) failForwarded(w http.ResponseWriter, status int, msg string) {
	if f == native {
		writeError(w, status, msg)
		return
	}
	var body any = openai.NewError(status, msg)
	if f == anthropicAPI {
		body = anthropic.NewError(status, msg)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body) // A failed write means the client left.
}

// failMidStream ends a response whose first bytes are already sent, in the
// stream's own terms: Ollama's final {"error"} line on NDJSON; on server-sent
// events an error event, which each SDK raises as an error: Anthropic's
// "event: error", the Responses API's response.failed (numbered after the
// last event, for the response the first one named), and otherwise OpenAI's
// error object as data. Ollama itself ends such streams with nothing at all
// (Anthropic, Responses) or an empty chunk and no [DONE] (OpenAI chat): a
// quirk we fix. first and last are the first and the last frame the client
// got.
func (f format) failMidStream(w http.ResponseWriter, contentType string, msg string, first, last []byte) {
	var ev []byte
	switch {
	case !isSSE(contentType):
		ev = append(job.ErrorBody(msg), '\n')
	case f == anthropicAPI:
		b, _ := json.Marshal(anthropic.StreamErrorEvent{Type: "error", Error: anthropic.Error{Type: "api_error", Message: msg}}) // Strings always marshal.
		ev = job.SSENamedEvent("error", b)
	case f == responses:
		ev = job.SSENamedEvent("response.failed", responseFailed(msg, first, last))
	default:
		b, _ := json.Marshal(openai.NewError(http.StatusInternalServerError, msg)) // Always marshals.
		ev = job.SSEEvent(b)
	}
	_, _ = w.Write(ev) // A failed write means the client left; nothing more to tell it.
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
}

// responseFailed is the data of a response.failed event, as Ollama's
// Responses middleware writes one (a map, so with its keys sorted): the
// response the stream's first event announced, numbered after its last.
func responseFailed(msg string, first, last []byte) []byte {
	var opening struct {
		Response struct {
			ID    string `json:"id"`
			Model string `json:"model"`
		} `json:"response"`
	}
	_ = json.Unmarshal(job.Payload(first), &opening) // Whatever it names; nothing if it is no event.
	var end struct {
		Seq *int `json:"sequence_number"`
	}
	seq := 0
	if json.Unmarshal(job.Payload(last), &end) == nil && end.Seq != nil {
		seq = *end.Seq + 1
	}
	b, _ := json.Marshal(map[string]any{ // Strings and ints always marshal.
		"type":            "response.failed",
		"sequence_number": seq,
		"response": map[string]any{
			"id": opening.Response.ID, "object": "response", "status": "failed", "model": opening.Response.Model,
			"output": []any{}, "error": map[string]any{"code": "api_error", "message": msg},
		},
	})
	return b
}

// complete reports whether a stream whose last frame is last ended as its API
// ends one: [DONE] (OpenAI chat and completions), message_stop (Anthropic),
// response.completed, .incomplete or .failed (Responses). Ollama ends a
// stream that broke off without one and without saying why.
func (f format) complete(last []byte) bool {
	switch f {
	case openAI:
		return string(job.Payload(last)) == string(job.SSEDone)
	case anthropicAPI:
		return job.EventName(last) == "message_stop"
	case responses:
		switch job.EventName(last) {
		case "response.completed", "response.incomplete", "response.failed":
			return true
		}
		return false
	}
	return true
}

func isSSE(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "text/event-stream"
}
