package ollamasim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// handleEmbed serves POST /api/embed: one L2-normalised vector per input,
// checking the request in the order Ollama's EmbedHandler does.
func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	start := time.Now()
	var req api.EmbedRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ref, err := parseModelRef(req.Model)
	if err != nil {
		writeModelRefError(w, err, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if ref.cloud {
		cloudUnreachable(w, r, r.URL.Path)
		return
	}
	var input []string
	switch in := req.Input.(type) {
	case string:
		if in != "" {
			input = append(input, in)
		}
	case []any:
		for _, v := range in {
			str, ok := v.(string)
			if !ok {
				writeError(w, http.StatusBadRequest, "invalid input type")
				return
			}
			input = append(input, str)
		}
	default:
		if req.Input != nil {
			writeError(w, http.StatusBadRequest, "invalid input type")
			return
		}
	}
	e := s.lookup(ref.base)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		return
	}
	_, numCtx, err := parseOptions(req.Options)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	ka := keepAlive(req.KeepAlive)
	release, loaded, ok := s.embedStart(r.Context(), w, e, ka, numCtx, len(input) > 0)
	if !ok {
		return
	}
	if len(input) == 0 {
		writeJSON(w, http.StatusOK, api.EmbedResponse{Model: req.Model, Embeddings: [][]float32{}})
		return
	}
	defer release()
	limit := min(cmp.Or(numCtx, defaultContextLength), trainedContextLength)
	resp := api.EmbedResponse{Model: req.Model, Embeddings: make([][]float32, len(input))}
	for i, text := range input {
		// Ollama truncates an input longer than the context unless told
		// not to, and only then asks the runner, which may not embed.
		words := strings.Fields(text)
		if len(words) > limit {
			if req.Truncate != nil && !*req.Truncate {
				writeError(w, http.StatusBadRequest, "the input length exceeds the context length")
				return
			}
			text = strings.Join(words[:limit], " ")
		}
		if !e.has(model.CapabilityEmbedding) {
			writeError(w, http.StatusNotImplemented, errNoEmbeddings)
			return
		}
		raw := s.embedding(e, text)
		v := make([]float32, len(raw))
		for j, x := range raw {
			v[j] = float32(x)
		}
		v = normalise(v)
		if req.Dimensions > 0 && req.Dimensions < len(v) {
			v = normalise(v[:req.Dimensions])
		}
		resp.Embeddings[i] = v
		resp.PromptEvalCount += countTokens(text)
	}
	resp.TotalDuration = time.Since(start)
	resp.LoadDuration = loaded.Sub(start)
	writeJSON(w, http.StatusOK, resp)
	s.completed.Add(1)
}

// errNoEmbeddings is llama-server's answer to an embedding request for a
// model whose GGUF declares no pooling type: Ollama 0.30+ loads any model
// for /api/embed and passes this on, with 501 (500 on /api/embeddings).
const errNoEmbeddings = "This server does not support embeddings. Start it with `--embeddings`"

// handleEmbeddings serves the legacy POST /api/embeddings: one vector, not
// normalised. Its direction equals /api/embed's for the same text.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	var req api.EmbeddingRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ref, err := parseModelRef(req.Model)
	if err != nil {
		writeModelRefError(w, err, http.StatusBadRequest, "model is required")
		return
	}
	if ref.cloud {
		cloudUnreachable(w, r, r.URL.Path)
		return
	}
	e := s.lookup(ref.base)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		return
	}
	_, numCtx, err := parseOptions(req.Options)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	release, _, ok := s.embedStart(r.Context(), w, e, keepAlive(req.KeepAlive), numCtx, req.Prompt != "")
	if !ok {
		return
	}
	if req.Prompt == "" {
		writeJSON(w, http.StatusOK, api.EmbeddingResponse{Embedding: []float64{}})
		return
	}
	defer release()
	if !e.has(model.CapabilityEmbedding) {
		writeError(w, http.StatusInternalServerError, errNoEmbeddings)
		return
	}
	writeJSON(w, http.StatusOK, api.EmbeddingResponse{Embedding: s.embedding(e, req.Prompt)})
	s.completed.Add(1)
}

// embedStart applies the injected failure, loads the model and, when there
// is something to embed, takes a slot and spends TimeToFirstToken on it as
// prompt evaluation. On success with work the caller must call release
// once. On failure the response has been written.
func (s *Server) embedStart(ctx context.Context, w http.ResponseWriter, e *entry, ka time.Duration, numCtx int, work bool) (release func(), loaded time.Time, ok bool) {
	f := s.currentFailure()
	if f.Status != 0 {
		writeError(w, f.Status, f.message())
		return nil, time.Time{}, false
	}
	if !work && f.Hang {
		s.hang(ctx)
		return nil, time.Time{}, false
	}
	res, err := s.acquireModel(ctx, e, ka, numCtx)
	if errors.Is(err, errServerBusy) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return nil, time.Time{}, false
	} else if err != nil {
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return nil, time.Time{}, false
	}
	loaded = time.Now()
	if !work {
		s.releaseModel(e, res, ka)
		return nil, loaded, true
	}
	releaseSlot, err := s.acquireSlot(ctx)
	if errors.Is(err, errServerBusy) {
		s.releaseModel(e, res, ka)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return nil, time.Time{}, false
	} else if err != nil {
		s.releaseModel(e, res, ka)
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return nil, time.Time{}, false
	}
	release = func() {
		releaseSlot()
		s.releaseModel(e, res, ka)
	}
	if f.Hang {
		s.hang(ctx) // a stuck runner keeps its slot
		release()
		return nil, time.Time{}, false
	}
	if !sleep(ctx, s.cfg.TimeToFirstToken) {
		release()
		s.canceled.Add(1)
		return nil, time.Time{}, false
	}
	return release, loaded, true
}

// embedding is the raw deterministic vector for text on e.
func (s *Server) embedding(e *entry, text string) []float64 {
	return embedding(seedOf(itoa(s.cfg.Seed), e.Name, "embed", text), e.EmbeddingLength)
}
