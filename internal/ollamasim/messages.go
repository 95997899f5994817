package ollamasim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/api"
)

// /v1/messages is the Anthropic Messages API, a net/http port of Ollama's
// AnthropicMessagesMiddleware (middleware/anthropic.go): the request is
// converted with Ollama's anthropic package, run as a native chat, and
// every value the chat writes is converted back with the same package, so
// the answer is what Ollama's would be. Ollama's built-in web search (a
// "web_search_*" tool that Ollama runs itself against ollama.com) is not
// simulated: such a tool is offered to the model like any other.

// handleMessages serves POST /v1/messages.
func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	var req anthropic.MessagesRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeAnthropicError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case req.Model == "":
		writeAnthropicError(w, http.StatusBadRequest, "model is required")
		return
	case req.MaxTokens <= 0:
		writeAnthropicError(w, http.StatusBadRequest, "max_tokens is required and must be positive")
		return
	case len(req.Messages) == 0:
		writeAnthropicError(w, http.StatusBadRequest, "messages is required")
		return
	}
	chatReq, err := anthropic.FromMessagesRequest(req)
	if err != nil {
		writeAnthropicError(w, http.StatusBadRequest, err.Error())
		return
	}
	id := anthropic.GenerateMessageID()
	conv := &messagesConverter{
		id:     id,
		stream: req.Stream,
		events: anthropic.NewStreamConverter(id, req.Model, anthropic.EstimateInputTokens(req)),
	}
	if req.Stream {
		setSSEHeaders(w)
	}
	// Ollama asks a model that cannot think to answer without thinking
	// rather than refuse: Claude Code asks for thinking whatever the model.
	r = r.WithContext(context.WithValue(r.Context(), relaxThinking{}, true))
	s.relayErrors(w, r, chatReq, conv.convert, anthropicError, s.handleChat)
}

// setSSEHeaders sets the headers Ollama's middleware sets before it runs a
// streamed request; an error answer keeps all but the content type.
func setSSEHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Connection", "keep-alive")
}

func anthropicError(status int, msg string) any { return anthropic.NewError(status, msg) }

// writeAnthropicError answers like the middleware's c.AbortWithStatusJSON:
// Anthropic's error object with a fresh request_id, gin's JSON content type
// and no trailing newline.
func writeAnthropicError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, anthropic.NewError(status, msg))
}

// messagesConverter is the middleware's AnthropicWriter.
type messagesConverter struct {
	id     string
	stream bool
	events *anthropic.StreamConverter
}

// convert turns one native value into the Messages answer or its events. A
// native mid-stream {"error": ...} line decodes as an empty chat response,
// which makes no event: the stream ends without message_stop, as in Ollama.
func (c *messagesConverter) convert(cw *compatWriter, data []byte) error {
	var resp api.ChatResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return err
	}
	if !c.stream {
		return cw.sendJSON(anthropic.ToMessagesResponse(c.id, resp))
	}
	var buf bytes.Buffer
	for _, ev := range c.events.Process(resp) {
		if err := namedEvent(&buf, ev.Event, ev.Data); err != nil {
			return err
		}
	}
	return cw.send("text/event-stream", buf.Bytes())
}

// namedEvent frames a server-sent event with an event line, as the
// Anthropic and Responses middleware write them.
func namedEvent(buf *bytes.Buffer, event string, v any) error {
	d, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Fprintf(buf, "event: %s\ndata: %s\n\n", event, d)
	return nil
}
