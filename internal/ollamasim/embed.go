package ollamasim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// handleEmbed serves POST /api/embed: one L2-normalised vector per input.
func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	start := time.Now()
	var req api.EmbedRequest
	if !decodeBody(w, r, &req) {
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
	e := s.lookup(req.Model)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if !s.checkEmbedding(w, e, req.Options) {
		return
	}
	_, numCtx, _ := parseOptions(req.Options) // checked by checkEmbedding
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
	resp := api.EmbedResponse{Model: req.Model, Embeddings: make([][]float32, len(input))}
	for i, text := range input {
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

// handleEmbeddings serves the legacy POST /api/embeddings: one vector, not
// normalised. Its direction equals /api/embed's for the same text.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	var req api.EmbeddingRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !model.ParseName(req.Model).IsValid() {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	e := s.lookup(req.Model)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		return
	}
	if !s.checkEmbedding(w, e, req.Options) {
		return
	}
	_, numCtx, _ := parseOptions(req.Options) // checked by checkEmbedding
	release, _, ok := s.embedStart(r.Context(), w, e, keepAlive(req.KeepAlive), numCtx, req.Prompt != "")
	if !ok {
		return
	}
	if req.Prompt == "" {
		writeJSON(w, http.StatusOK, api.EmbeddingResponse{Embedding: []float64{}})
		return
	}
	defer release()
	writeJSON(w, http.StatusOK, api.EmbeddingResponse{Embedding: s.embedding(e, req.Prompt)})
	s.completed.Add(1)
}

// checkEmbedding answers 400 for a model without the embedding capability
// (the checklist's text, "<full name> does not support embedding") and 500
// for options of the wrong type.
func (s *Server) checkEmbedding(w http.ResponseWriter, e *entry, options map[string]any) bool {
	if !e.has(model.CapabilityEmbedding) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s does not support %s", e.fullName(), model.CapabilityEmbedding))
		return false
	}
	if _, _, err := parseOptions(options); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return false
	}
	return true
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
	if err := s.acquireModel(ctx, e, ka, numCtx); err != nil {
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return nil, time.Time{}, false
	}
	loaded = time.Now()
	if !work {
		s.releaseModel(e, ka)
		return nil, loaded, true
	}
	releaseSlot, err := s.acquireSlot(ctx)
	if errors.Is(err, errServerBusy) {
		s.releaseModel(e, ka)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return nil, time.Time{}, false
	} else if err != nil {
		s.releaseModel(e, ka)
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return nil, time.Time{}, false
	}
	release = func() {
		releaseSlot()
		s.releaseModel(e, ka)
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
