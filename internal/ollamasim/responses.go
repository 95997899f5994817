package ollamasim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// /v1/responses is the OpenAI Responses API as Ollama serves it: stateless
// (previous_response_id and conversation are ignored, store is false), a
// net/http port of ResponsesMiddleware (middleware/openai.go) with the
// openai package's conversions. Its errors are OpenAI's. Ollama's built-in
// "web_search" tool, which Ollama runs itself against ollama.com, is not
// simulated: the model sees it as the function Ollama gives local models.

// handleResponses serves POST /v1/responses. A zstd-encoded body has been
// decompressed by cloudPassthrough, as in Ollama.
func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req openai.ResponsesRequest
	if !decodeCompat(w, r, &req) {
		return
	}
	chatReq, err := openai.FromResponsesRequest(req)
	if err != nil {
		writeCompatError(w, http.StatusBadRequest, err.Error())
		return
	}
	stream := req.Stream != nil && *req.Stream // Responses streams only when asked
	chatReq.Stream = &stream
	responseID := fmt.Sprintf("resp_%d", rand.IntN(999999))
	itemID := fmt.Sprintf("msg_%d", rand.IntN(999999))
	conv := &responsesConverter{
		responseID: responseID,
		itemID:     itemID,
		stream:     stream,
		request:    req,
		events:     openai.NewResponsesStreamConverter(responseID, itemID, req.Model, req),
	}
	if stream {
		setSSEHeaders(w)
	}
	s.relay(w, r, chatReq, conv.convert, s.handleChat)
}

// responsesConverter is the middleware's ResponsesWriter.
type responsesConverter struct {
	responseID, itemID string
	stream             bool
	request            openai.ResponsesRequest
	events             *openai.ResponsesStreamConverter
}

// convert turns one native value into the response or its events. A native
// mid-stream {"error": ...} line decodes as an empty chat response, which
// makes no event: the stream ends without response.completed, as in Ollama.
func (c *responsesConverter) convert(cw *compatWriter, data []byte) error {
	var resp api.ChatResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return err
	}
	if !c.stream {
		out := openai.ToResponse(c.request.Model, c.responseID, c.itemID, resp, c.request)
		completed := time.Now().Unix()
		out.CompletedAt = &completed
		return cw.sendJSON(out)
	}
	var buf bytes.Buffer
	for _, ev := range c.events.Process(resp) {
		if err := namedEvent(&buf, ev.Event, ev.Data); err != nil {
			return err
		}
	}
	return cw.send("text/event-stream", buf.Bytes())
}
