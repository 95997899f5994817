package ollamasim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The OpenAI-compatible routes are a net/http port of Ollama's gin
// middleware (middleware/openai.go): each handler converts the request with
// the openai package, runs the native handler on it, and converts every
// value the native handler writes with the same package. Nothing here
// generates text, so /v1 answers are exactly what the native routes would
// say, including Ollama's quirks: a forwarded error keeps its status and
// takes the error type of that status, a mid-stream error becomes an empty
// chunk with no [DONE], and an empty model list is "data":null.

// handleChatCompletions serves POST /v1/chat/completions (ChatMiddleware).
func (s *Server) handleChatCompletions(w http.ResponseWriter, r *http.Request) {
	var req openai.ChatCompletionRequest
	if !decodeCompat(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 {
		writeCompatError(w, http.StatusBadRequest, "[] is too short - 'messages'")
		return
	}
	chatReq, err := openai.FromChatRequest(req)
	if err != nil {
		writeCompatError(w, http.StatusBadRequest, err.Error())
		return
	}
	conv := &chatConverter{
		id:            fmt.Sprintf("chatcmpl-%d", rand.IntN(999)),
		stream:        req.Stream,
		streamOptions: req.StreamOptions,
	}
	s.relay(w, r, chatReq, conv.convert, s.handleChat)
}

// handleCompletions serves POST /v1/completions (CompletionsMiddleware).
func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req openai.CompletionRequest
	if !decodeCompat(w, r, &req) {
		return
	}
	genReq, err := openai.FromCompleteRequest(req)
	if err != nil {
		writeCompatError(w, http.StatusBadRequest, err.Error())
		return
	}
	conv := &completeConverter{
		id:            fmt.Sprintf("cmpl-%d", rand.IntN(999)),
		stream:        req.Stream,
		streamOptions: req.StreamOptions,
	}
	s.relay(w, r, genReq, conv.convert, s.handleGenerate)
}

// handleEmbeddingsCompat serves POST /v1/embeddings (EmbeddingsMiddleware).
func (s *Server) handleEmbeddingsCompat(w http.ResponseWriter, r *http.Request) {
	var req openai.EmbedRequest
	if !decodeCompat(w, r, &req) {
		return
	}
	if req.EncodingFormat != "" && !strings.EqualFold(req.EncodingFormat, "float") && !strings.EqualFold(req.EncodingFormat, "base64") {
		writeCompatError(w, http.StatusBadRequest, fmt.Sprintf("Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64'].", req.EncodingFormat))
		return
	}
	if req.Input == "" {
		req.Input = []string{""}
	}
	if req.Input == nil {
		writeCompatError(w, http.StatusBadRequest, "invalid input")
		return
	}
	if v, ok := req.Input.([]any); ok && len(v) == 0 {
		writeCompatError(w, http.StatusBadRequest, "invalid input")
		return
	}
	embedReq := api.EmbedRequest{Model: req.Model, Input: req.Input, Dimensions: req.Dimensions}
	convert := func(cw *compatWriter, data []byte) error {
		var resp api.EmbedResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return err
		}
		return cw.sendJSON(openai.ToEmbeddingList(req.Model, resp, req.EncodingFormat))
	}
	s.relay(w, r, embedReq, convert, s.handleEmbed)
}

// handleModels serves GET /v1/models (ListMiddleware).
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	cw := &compatWriter{w: w, status: http.StatusOK, convert: func(cw *compatWriter, data []byte) error {
		var resp api.ListResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return err
		}
		return cw.sendJSON(openai.ToListCompletion(resp))
	}}
	s.handleTags(cw, r)
	cw.finish()
}

// handleModel serves GET /v1/models/{model} (RetrieveMiddleware). The
// model is one path segment, as in gin, so a name with a namespace cannot
// be retrieved. A cloud model goes to ollama.com, as
// cloudModelPathPassthroughMiddleware sends it.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	if ref, err := parseModelRef(name); err == nil && ref.cloud {
		cloudUnreachable(w, r, "/v1/models/"+ref.base)
		return
	}
	convert := func(cw *compatWriter, data []byte) error {
		var resp api.ShowResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return err
		}
		return cw.sendJSON(openai.ToModel(resp, name))
	}
	s.relay(w, r, api.ShowRequest{Name: name}, convert, s.handleShow)
}

// relay runs native with body as its request body and convert on
// everything it writes with status 200; what it writes with another status
// is an OpenAI error.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, body any, convert func(*compatWriter, []byte) error, native http.HandlerFunc) {
	s.relayErrors(w, r, body, convert, nil, native)
}

// relayErrors is relay with the error object of another API: errorBody
// makes it from the native status and message (nil: OpenAI's).
func (s *Server) relayErrors(w http.ResponseWriter, r *http.Request, body any, convert func(*compatWriter, []byte) error, errorBody func(int, string) any, native http.HandlerFunc) {
	b, err := json.Marshal(body)
	if err != nil {
		writeCompatError(w, http.StatusInternalServerError, err.Error())
		return
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	cw := &compatWriter{w: w, status: http.StatusOK, convert: convert, errorBody: errorBody}
	native(cw, r)
	cw.finish()
}

// maxDecompressedBody bounds a zstd request body once decompressed, as
// Ollama's middleware does.
const maxDecompressedBody = 20 << 20

// maxRequestBody bounds the bodies the simulator reads whole before
// decoding. Ollama has no such bound; this one is far above any request a
// test sends.
const maxRequestBody = 64 << 20

// cloudPassthrough is Ollama's cloudPassthroughMiddleware, in front of the
// POST /v1 inference routes: it decompresses a zstd-encoded body, and sends
// a request for a cloud model to ollama.com, which the simulator answers as
// an Ollama without internet does. Its own errors have the native shape.
func cloudPassthrough(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := io.Reader(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if r.Header.Get("Content-Encoding") == "zstd" {
			dec, err := zstd.NewReader(body, zstd.WithDecoderMaxMemory(8<<20))
			if err != nil {
				writeError(w, http.StatusBadRequest, "failed to decompress request body")
				return
			}
			defer dec.Close()
			body = http.MaxBytesReader(w, io.NopCloser(dec), maxDecompressedBody)
			r.Header.Del("Content-Encoding")
		}
		b, err := io.ReadAll(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		var fields struct {
			Model json.RawMessage `json:"model"`
		}
		var name string
		if json.Unmarshal(b, &fields) == nil && json.Unmarshal(fields.Model, &name) == nil {
			if ref, err := parseModelRef(name); err == nil && ref.cloud {
				cloudUnreachable(w, r, r.URL.Path)
				return
			}
		}
		next(w, r)
	}
}

// decodeCompat decodes r's body like gin's ShouldBindJSON; unlike the
// native routes, an empty body is just "EOF". It writes the 400 itself.
func decodeCompat(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeCompatError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// writeCompatError answers like the middleware's c.AbortWithStatusJSON:
// the error type follows the status, and the body has no trailing newline.
func writeCompatError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, openai.NewError(status, msg))
}

// compatWriter is the net/http counterpart of the middleware's writers
// wrapping gin's ResponseWriter. Like gin's writer it holds the status
// until the first Write, so the conversion can still set the content type.
// A Write with status 200 goes through convert; any other is a native
// {"error": ...} and becomes the API's error with the same status, as in
// Ollama's BaseWriter.writeError and AnthropicWriter.writeError.
type compatWriter struct {
	w         http.ResponseWriter
	status    int
	sent      bool // the status line has gone out
	convert   func(cw *compatWriter, data []byte) error
	errorBody func(status int, msg string) any // nil: openai.NewError
}

func (cw *compatWriter) Header() http.Header { return cw.w.Header() }

func (cw *compatWriter) WriteHeader(code int) {
	if code > 0 && !cw.sent {
		cw.status = code
	}
}

// Write converts one value written by the native handler: a whole JSON
// reply or one NDJSON line.
func (cw *compatWriter) Write(data []byte) (int, error) {
	var err error
	if cw.status != http.StatusOK {
		err = cw.writeError(data)
	} else {
		err = cw.convert(cw, data)
	}
	if err != nil {
		return 0, err
	}
	return len(data), nil
}

// FlushError lets http.ResponseController flush through to the client, so
// each SSE event leaves when the native NDJSON line would have.
func (cw *compatWriter) FlushError() error {
	cw.writeHeaderNow()
	return http.NewResponseController(cw.w).Flush()
}

func (cw *compatWriter) writeError(data []byte) error {
	var serr api.StatusError
	if err := json.Unmarshal(data, &serr); err != nil {
		// As in Ollama: a body that is not JSON is the message itself.
		serr = api.StatusError{ErrorMessage: string(data)}
	}
	if cw.errorBody != nil {
		return cw.send("application/json", encodeLine(cw.errorBody(cw.status, serr.Error())))
	}
	return cw.send("application/json", encodeLine(openai.NewError(cw.status, serr.Error())))
}

// sendJSON writes v as the middleware's json.NewEncoder does: plain
// application/json and a trailing newline.
func (cw *compatWriter) sendJSON(v any) error {
	return cw.send("application/json", encodeLine(v))
}

func (cw *compatWriter) send(contentType string, b []byte) error {
	cw.Header().Set("Content-Type", contentType)
	cw.writeHeaderNow()
	_, err := cw.w.Write(b)
	return err
}

func (cw *compatWriter) writeHeaderNow() {
	if !cw.sent {
		cw.sent = true
		cw.w.WriteHeader(cw.status)
	}
}

// finish sends a status the native handler set without writing a body,
// as gin does after the last handler.
func (cw *compatWriter) finish() { cw.writeHeaderNow() }

// encodeLine is json.Encoder's output: the JSON and a newline. Only the
// openai package's own types get here; they always marshal.
func encodeLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(openai.NewError(http.StatusInternalServerError, err.Error()))
	}
	return append(b, '\n')
}

// sseEvent frames one server-sent event the way the middleware does.
func sseEvent(buf *bytes.Buffer, v any) error {
	d, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf.Write(job.SSEEvent(d))
	return nil
}

var sseDone = string(job.SSEEvent(job.SSEDone))

// chatConverter is the middleware's ChatWriter (0.32.15): the first chunk
// alone carries the role, a chunk with both thinking and content is split in
// two, the metrics-only final response sends no empty content chunk, and the
// finish reason comes in a chunk of its own.
type chatConverter struct {
	id             string
	stream         bool
	streamOptions  *openai.StreamOptions
	toolCallSent   bool
	firstChunkSent bool
	createdAt      time.Time
}

func (c *chatConverter) convert(cw *compatWriter, data []byte) error {
	// A native mid-stream {"error": ...} line decodes as an empty
	// ChatResponse, so it becomes an empty chunk and the stream ends
	// without [DONE]: Ollama's behaviour, kept on purpose.
	var resp api.ChatResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return err
	}
	if !c.stream {
		return cw.sendJSON(openai.ToChatCompletion(c.id, resp))
	}
	if resp.CreatedAt.IsZero() {
		resp.CreatedAt = time.Now().UTC()
	}
	if c.createdAt.IsZero() {
		c.createdAt = resp.CreatedAt
	}
	resp.CreatedAt = c.createdAt
	var buf bytes.Buffer
	emptyTrailer := resp.Done && c.firstChunkSent && resp.Message.Content == "" && resp.Message.Thinking == "" &&
		len(resp.Message.ToolCalls) == 0 && len(resp.Logprobs) == 0
	if !emptyTrailer {
		for _, chunk := range openai.ToStreamChunks(c.id, resp, !c.firstChunkSent) {
			if !c.toolCallSent && len(chunk.Choices) > 0 && len(chunk.Choices[0].Delta.ToolCalls) > 0 {
				c.toolCallSent = true
			}
			if err := sseEvent(&buf, chunk); err != nil {
				return err
			}
		}
		c.firstChunkSent = true
	}
	if resp.Done {
		finish := openai.FinishChunk(c.id, resp, c.toolCallSent)
		if err := sseEvent(&buf, finish); err != nil {
			return err
		}
		if c.streamOptions != nil && c.streamOptions.IncludeUsage {
			u := openai.ToUsage(resp)
			finish.Usage = &u
			finish.Choices = []openai.ChunkChoice{}
			if err := sseEvent(&buf, finish); err != nil {
				return err
			}
		}
		buf.WriteString(sseDone)
	}
	return cw.send("text/event-stream", buf.Bytes())
}

// completeConverter is the middleware's CompleteWriter.
type completeConverter struct {
	id            string
	stream        bool
	streamOptions *openai.StreamOptions
}

func (c *completeConverter) convert(cw *compatWriter, data []byte) error {
	var resp api.GenerateResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return err
	}
	if !c.stream {
		return cw.sendJSON(openai.ToCompletion(c.id, resp))
	}
	includeUsage := c.streamOptions != nil && c.streamOptions.IncludeUsage
	chunk := openai.ToCompleteChunk(c.id, resp)
	if includeUsage {
		// Ollama puts a zeroed usage on every chunk.
		chunk.Usage = &openai.Usage{}
	}
	var buf bytes.Buffer
	if err := sseEvent(&buf, chunk); err != nil {
		return err
	}
	if resp.Done {
		if includeUsage {
			u := openai.ToUsageGenerate(resp)
			chunk.Usage = &u
			chunk.Choices = []openai.CompleteChunkChoice{}
			if err := sseEvent(&buf, chunk); err != nil {
				return err
			}
		}
		buf.WriteString(sseDone)
	}
	return cw.send("text/event-stream", buf.Bytes())
}
