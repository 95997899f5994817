package dispatcher

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// validate decodes body as Ollama would for route, so bad input is refused
// with Ollama's status and message before anything is queued. It returns the
// model name, or writes the error and returns ok=false. The body itself is
// forwarded unchanged.
func validate(w http.ResponseWriter, route string, body []byte) (string, bool) {
	f := formatOf(route)
	model, err := decodeRoute(route, body)
	if err == nil {
		err = job.CheckModelKeys(body)
	}
	if err != nil {
		f.fail(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	if model == "" {
		// Ollama's generate answers 404 "model '' not found" here; we answer
		// as chat does (and as /v1/responses does, from behind its middleware).
		f.failForwarded(w, http.StatusBadRequest, "model is required")
		return "", false
	}
	return model, true
}

// decodeRoute applies the checks Ollama makes before it looks the model up.
func decodeRoute(route string, body []byte) (string, error) {
	switch route {
	case "/api/generate":
		var req api.GenerateRequest
		err := decode(body, &req)
		return req.Model, err
	case "/api/chat":
		var req api.ChatRequest
		err := decode(body, &req)
		return req.Model, err
	case "/api/embed":
		var req api.EmbedRequest
		err := decode(body, &req)
		return req.Model, err
	case "/api/embeddings":
		var req api.EmbeddingRequest
		err := decode(body, &req)
		return req.Model, err
	case "/v1/chat/completions":
		var req openai.ChatCompletionRequest
		if err := decode(body, &req); err != nil {
			return "", err
		}
		if len(req.Messages) == 0 {
			return "", fmt.Errorf("[] is too short - 'messages'")
		}
		if _, err := openai.FromChatRequest(req); err != nil {
			return "", err
		}
		return req.Model, nil
	case "/v1/completions":
		var req openai.CompletionRequest
		if err := decode(body, &req); err != nil {
			return "", err
		}
		if _, err := openai.FromCompleteRequest(req); err != nil {
			return "", err
		}
		return req.Model, nil
	case "/v1/embeddings":
		var req openai.EmbedRequest
		if err := decode(body, &req); err != nil {
			return "", err
		}
		if req.EncodingFormat != "" && !strings.EqualFold(req.EncodingFormat, "float") && !strings.EqualFold(req.EncodingFormat, "base64") {
			return "", fmt.Errorf("Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64'].", req.EncodingFormat)
		}
		if v, ok := req.Input.([]any); req.Input == nil || ok && len(v) == 0 {
			return "", fmt.Errorf("invalid input")
		}
		return req.Model, nil
	case "/v1/messages":
		return decodeMessages(body)
	case "/v1/responses":
		var req openai.ResponsesRequest
		if err := decode(body, &req); err != nil {
			return "", err
		}
		if _, err := openai.FromResponsesRequest(req); err != nil {
			return "", err
		}
		return req.Model, nil
	}
	return "", fmt.Errorf("route %s cannot be queued", route)
}

// decodeMessages applies the checks of Ollama's Anthropic middleware, in its
// order; all of them answer 400, "model is required" included.
func decodeMessages(body []byte) (string, error) {
	var req anthropic.MessagesRequest
	if err := decode(body, &req); err != nil {
		return "", err
	}
	switch {
	case req.Model == "":
		return "", errors.New("model is required")
	case req.MaxTokens <= 0:
		return "", errors.New("max_tokens is required and must be positive")
	case len(req.Messages) == 0:
		return "", errors.New("messages is required")
	}
	if _, err := anthropic.FromMessagesRequest(req); err != nil {
		return "", err
	}
	return req.Model, nil
}

// maxDecompressed bounds a zstd request body once decompressed, as Ollama
// does (server/cloud_proxy.go, maxDecompressedBodySize).
const maxDecompressed = 20 << 20

// decompress undoes the zstd Content-Encoding that Ollama accepts on its /v1
// inference routes (its cloud passthrough middleware decompresses them before
// anything else reads them; Codex compresses its requests), so that the job
// carries the JSON Ollama reads. It writes the error itself, in Ollama's
// native shape as that middleware does (413 in the route's shape past the
// dispatcher's own body limit, as readBody), and returns ok=false when the
// body cannot be read.
func decompress(w http.ResponseWriter, f format, body []byte, limit int64) ([]byte, bool) {
	dec, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderMaxMemory(8<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "failed to decompress request body")
		return nil, false
	}
	defer dec.Close()
	out, err := io.ReadAll(io.LimitReader(dec, min(limit, maxDecompressed)+1))
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	case int64(len(out)) > maxDecompressed:
		writeError(w, http.StatusBadRequest, "http: request body too large")
		return nil, false
	case int64(len(out)) > limit:
		f.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit is %d bytes", limit))
		return nil, false
	}
	return out, true
}
