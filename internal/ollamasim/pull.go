package ollamasim

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// errManifestMissing is what Ollama reports for a name the registry does
// not have: the registry's 404 becomes os.ErrNotExist.
var errManifestMissing = errors.New("pull model manifest: file does not exist")

// pullParts is how many progress lines a layer that is not yet on disk
// reports, each with more of it completed. Ollama reports every 60ms; a
// fixed count keeps the stream independent of timing.
const pullParts = 4

// handlePull serves POST /api/pull. The pull takes Config.PullDuration,
// spread over its progress lines, and installs the model (NamedModel for a
// new name) just before "success". A name containing "missing" fails after
// "pulling manifest", mid-stream as in Ollama.
func (s *Server) handlePull(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if !decodeBody(w, r, &req) {
		return
	}
	// A cloud name is pulled as Ollama's legacy stub, "name:tag-cloud".
	n, err := pullName(cmp.Or(req.Model, req.Name))
	if err != nil {
		writeModelRefError(w, err, http.StatusBadRequest, errInvalidName.Error())
		return
	}
	n = s.canonicalName(n)

	if req.Stream != nil && !*req.Stream {
		// Ollama's waitForStream: only the last progress, or the error, with
		// a plain application/json content type.
		var last api.ProgressResponse
		err := s.pull(r.Context(), n, func(p api.ProgressResponse) error {
			last = p
			return nil
		})
		switch {
		case r.Context().Err() != nil:
		case err != nil:
			writeJSONType(w, http.StatusInternalServerError, "application/json", errorResponse{Error: err.Error()})
		default:
			writeJSONType(w, http.StatusOK, "application/json", last)
		}
		return
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	lw := lineWriter{w: w, rc: http.NewResponseController(w)}
	written := false
	err = s.pull(r.Context(), n, func(p api.ProgressResponse) error {
		written = true
		return lw.write(p)
	})
	switch {
	case err == nil || r.Context().Err() != nil:
	case !written:
		writeJSONType(w, http.StatusInternalServerError, "application/json", errorResponse{Error: err.Error()})
	default:
		// A failed write means the client left; there is nobody to tell.
		_ = lw.write(errorResponse{Error: err.Error()})
	}
}

// pull reports the progress of pulling n through progress and installs
// the model. It stops at the first error progress returns, or when ctx is
// done, without installing.
func (s *Server) pull(ctx context.Context, n model.Name, progress func(api.ProgressResponse) error) error {
	if err := progress(api.ProgressResponse{Status: "pulling manifest"}); err != nil {
		return err
	}
	name := n.DisplayShortest()
	m := NamedModel(name)
	existing := s.lookup(name)
	if existing != nil {
		m = existing.Model
	}
	layers, err := pullLayers(newEntry(m, time.Now()))
	if err != nil {
		return err
	}
	lines := 0
	for _, l := range layers {
		lines += l.parts(existing != nil)
	}
	step := s.cfg.PullDuration / time.Duration(lines+1)

	if !sleep(ctx, step) {
		return ctx.Err()
	}
	if strings.Contains(strings.ToLower(name), "missing") {
		return errManifestMissing
	}
	for _, l := range layers {
		parts := l.parts(existing != nil)
		for k := 1; k <= parts; k++ {
			if !sleep(ctx, step) {
				return ctx.Err()
			}
			err := progress(api.ProgressResponse{
				Status:    "pulling " + l.digest[7:19],
				Digest:    l.digest,
				Total:     l.size,
				Completed: l.size * int64(k) / int64(parts),
			})
			if err != nil {
				return err
			}
		}
	}
	if err := progress(api.ProgressResponse{Status: "verifying sha256 digest"}); err != nil {
		return err
	}
	if err := progress(api.ProgressResponse{Status: "writing manifest"}); err != nil {
		return err
	}
	s.install(newEntry(m, time.Now()))
	return progress(api.ProgressResponse{Status: "success"})
}

// layer is one blob of a model's manifest.
type layer struct {
	digest string // "sha256:" and 64 hex characters
	size   int64
}

// parts is how many progress lines the layer reports: one when it is
// already on disk (Ollama's cache hit), or when it is small enough to
// arrive at once.
func (l layer) parts(cached bool) int {
	if cached || l.size < 1<<20 {
		return 1
	}
	return pullParts
}

// pullLayers lists e's blobs in Ollama's manifest order: the weights, the
// template, the license, the parameters and, last, the config. The small
// blobs are the actual text /api/show serves, so their digests are real.
func pullLayers(e *entry) ([]layer, error) {
	blob := func(b []byte) layer {
		sum := sha256.Sum256(b)
		return layer{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(b))}
	}
	layers := []layer{
		{digest: "sha256:" + e.Digest, size: e.Size},
		blob([]byte(template(e))),
		blob([]byte(license)),
	}
	if params := parameters(e); len(params) > 0 {
		stops := make([]string, len(params))
		for i, p := range params {
			stops[i] = p.value
		}
		b, err := json.Marshal(map[string][]string{"stop": stops})
		if err != nil {
			return nil, fmt.Errorf("marshal parameters: %w", err)
		}
		layers = append(layers, blob(b))
	}
	cfg, err := json.Marshal(model.ConfigV2{
		ModelFormat:   "gguf",
		ModelFamily:   e.Family,
		ModelFamilies: []string{e.Family},
		ModelType:     e.ParameterSize,
		FileType:      e.QuantizationLevel,
		Architecture:  "amd64",
		OS:            "linux",
	})
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	return append(layers, blob(cfg)), nil
}
