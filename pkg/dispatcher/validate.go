package dispatcher

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// validate decodes body as Ollama would for route, so bad input is refused
// with Ollama's status and message before anything is queued. It returns the
// model name, or writes the error and returns ok=false. The body itself is
// forwarded unchanged.
func validate(w http.ResponseWriter, route string, body []byte) (string, bool) {
	f := native
	if strings.HasPrefix(route, "/v1/") {
		f = openAI
	}
	model, err := decodeRoute(route, body)
	if err == nil {
		err = job.CheckModelKeys(body)
	}
	if err != nil {
		f.fail(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	if model == "" {
		// Ollama's generate answers 404 "model '' not found" here; we answer as chat does.
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
	}
	return "", fmt.Errorf("route %s cannot be queued", route)
}
