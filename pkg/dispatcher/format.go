package dispatcher

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// format is the API family of a route: it decides the shape of errors.
type format int

const (
	native    format = iota // Ollama's /api routes: {"error": "..."}
	openAI                  // /v1 routes: {"error": {"message", "type", "param", "code"}}
	anthropic               // /v1/messages: {"type": "error", "error": {"type", "message"}}
)

// formatOf returns the API family of a request path.
func formatOf(path string) format {
	switch {
	case path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/"):
		return anthropic
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
	case openAI:
		typ, code := "invalid_request_error", "invalid_api_key"
		switch status {
		case http.StatusForbidden:
			code = "permission_denied"
		case http.StatusTooManyRequests:
			typ, code = "requests", "rate_limit_exceeded"
		}
		writeJSON(w, status, openai.ErrorResponse{Error: openai.Error{Message: msg, Type: typ, Code: &code}})
	case anthropic:
		typ := map[int]string{http.StatusUnauthorized: "authentication_error", http.StatusForbidden: "permission_error",
			http.StatusTooManyRequests: "rate_limit_error"}[status]
		writeJSON(w, status, anthropicError(typ, msg))
	default:
		writeError(w, status, msg)
	}
}

// anthropicError is Anthropic's error body.
func anthropicError(typ, msg string) any {
	type inner struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	return struct {
		Type  string `json:"type"`
		Error inner  `json:"error"`
	}{"error", inner{typ, msg}}
}

// fail writes an error the dispatcher itself detected before forwarding, as
// Ollama's handlers (native) or its OpenAI middleware (openAI) would.
func (f format) fail(w http.ResponseWriter, status int, msg string) {
	if f == native {
		writeError(w, status, msg)
		return
	}
	// Ollama's middleware rejects bad input with gin's AbortWithStatusJSON and
	// the error type that matches the status.
	writeJSON(w, status, openai.NewError(status, msg))
}

// failForwarded writes an error that Ollama's native handler would have
// produced behind the OpenAI middleware: the native status, the error type
// that matches it (since Ollama 0.32: invalid_request_error for 400,
// not_found_error for 404, api_error otherwise) and the middleware's bare
// application/json with json.Encoder's newline (middleware/openai.go writeError).
func (f format) failForwarded(w http.ResponseWriter, status int, msg string) {
	if f == native {
		writeError(w, status, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(openai.NewError(status, msg)) // A failed write means the client left.
}

// failMidStream ends a response whose first bytes are already sent: Ollama's
// final {"error"} line on NDJSON, and on server-sent events an error event,
// which OpenAI's SDKs raise as an APIError (Ollama itself sends an empty chunk
// and no [DONE] there: a quirk we fix).
func failMidStream(w http.ResponseWriter, contentType string, msg string) {
	mt, _, _ := mime.ParseMediaType(contentType)
	var line []byte
	switch mt {
	case "text/event-stream":
		b, _ := json.Marshal(openai.NewError(http.StatusInternalServerError, msg)) // Always marshals.
		line = job.SSEEvent(b)
	default:
		line = append(job.ErrorBody(msg), '\n')
	}
	_, _ = w.Write(line) // A failed write means the client left; nothing more to tell it.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
