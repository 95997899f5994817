package ollamasim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// entry is one installed model. It is immutable once built; SetModels
// replaces entries instead of changing them.
type entry struct {
	Model
	name       model.Name // parsed; the zero Name when Model.Name does not parse
	key        string     // lower-cased full name, the residency key
	modifiedAt time.Time
}

func newEntry(m Model, modifiedAt time.Time) *entry {
	m = m.withDefaults()
	e := &entry{Model: m, modifiedAt: modifiedAt}
	if n := model.ParseName(m.Name); n.IsValid() {
		e.name = n
		e.key = strings.ToLower(n.String())
	}
	return e
}

// fullName is the fully qualified name Ollama puts in capability errors,
// e.g. "registry.ollama.ai/library/llama3.2:latest".
func (e *entry) fullName() string { return e.name.String() }

func (e *entry) has(c model.Capability) bool {
	return slices.Contains(e.Capabilities, string(c))
}

func (e *entry) capabilities() []model.Capability {
	caps := make([]model.Capability, len(e.Capabilities))
	for i, c := range e.Capabilities {
		caps[i] = model.Capability(c)
	}
	return caps
}

func (e *entry) details() api.ModelDetails {
	return api.ModelDetails{
		Format:            "gguf",
		Family:            e.Family,
		Families:          []string{e.Family},
		ParameterSize:     e.ParameterSize,
		QuantizationLevel: e.QuantizationLevel,
	}
}

// listDetails are the details /api/tags gives in Ollama 0.32: those of
// /api/show and /api/ps, and the GGUF's trained context length and, where
// the model has one, its embedding length.
func (e *entry) listDetails() api.ModelDetails {
	d := e.details()
	d.ContextLength = trainedContextLength
	d.EmbeddingLength = e.EmbeddingLength
	return d
}

// residency is a loaded model, as listed by /api/ps.
type residency struct {
	expiresAt      time.Time
	refs           int // requests using the model right now
	contextLength  int
	expireWhenIdle bool // an unload request arrived while it was busy
}

// buildEntries turns models into entries whose modification times keep the
// given order newest first.
func buildEntries(models []Model, now time.Time) []*entry {
	entries := make([]*entry, len(models))
	for i, m := range models {
		entries[i] = newEntry(m, now.Add(-time.Duration(i)*time.Hour))
	}
	return entries
}

// SetModels replaces the inventory. Models that stay keep their loaded
// state; models that go are unloaded; new models with Loaded set are loaded.
// It is safe for concurrent use; requests already running are unaffected.
func (s *Server) SetModels(models []Model) {
	now := time.Now()
	entries := buildEntries(models, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models = entries
	keep := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.key == "" {
			continue
		}
		keep[e.key] = true
		if e.Loaded && s.loaded[e.key] == nil {
			s.loaded[e.key] = &residency{expiresAt: now.Add(defaultKeepAlive), contextLength: defaultContextLength}
		}
	}
	for k := range s.loaded {
		if !keep[k] {
			delete(s.loaded, k)
		}
	}
}

// lookup resolves a client-supplied name the way Ollama does: missing parts
// take their defaults and the comparison ignores case. It returns nil when
// the name is invalid or not installed.
func (s *Server) lookup(name string) *entry {
	n := model.ParseName(name)
	if !n.IsValid() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.models {
		if e.key != "" && e.name.EqualFold(n) {
			return e
		}
	}
	return nil
}

// canonicalName gives each part of n the spelling an installed model uses
// for it, as Ollama's getExistingName does, so that pulling or copying to a
// differently cased name does not create a second spelling. Where models
// disagree the first in the inventory wins; Ollama picks at random.
func (s *Server) canonicalName(n model.Name) model.Name {
	s.mu.Lock()
	defer s.mu.Unlock()
	var host, namespace, name, tag bool
	for _, e := range s.models {
		if e.key == "" {
			continue
		}
		if !host && strings.EqualFold(e.name.Host, n.Host) {
			n.Host, host = e.name.Host, true
		}
		if !namespace && strings.EqualFold(e.name.Namespace, n.Namespace) {
			n.Namespace, namespace = e.name.Namespace, true
		}
		if !name && strings.EqualFold(e.name.Model, n.Model) {
			n.Model, name = e.name.Model, true
		}
		if !tag && strings.EqualFold(e.name.Tag, n.Tag) {
			n.Tag, tag = e.name.Tag, true
		}
	}
	return n
}

// install adds e to the inventory as its newest model, replacing the model
// of the same name. Being first makes e win ties in /api/tags, which sorts
// by whole seconds. A replaced model that is loaded stays loaded, as
// Ollama's runner does when a manifest is rewritten under it.
func (s *Server) install(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models = slices.DeleteFunc(s.models, func(old *entry) bool {
		return old.key != "" && old.name.EqualFold(e.name)
	})
	s.models = slices.Insert(s.models, 0, e)
}

// remove deletes the model named n and unloads it, reporting whether it
// was installed. Ollama itself leaves a running model in /api/ps until its
// keep-alive ends (the CLI unloads it first); the simulator unloads at
// once, as SetModels does.
func (s *Server) remove(n model.Name) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.models {
		if e.key != "" && e.name.EqualFold(n) {
			s.models = slices.Delete(s.models, i, i+1)
			delete(s.loaded, e.key)
			return true
		}
	}
	return false
}

// handleDelete serves DELETE /api/delete: 200 with an empty body, like
// Ollama's DeleteHandler, which writes nothing on success.
func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	var req api.DeleteRequest
	if !decodeBody(w, r, &req) {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	n, err := pullName(name)
	switch {
	case errors.Is(err, errInvalidName):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q is invalid", name))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.remove(n) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// handleCopy serves POST /api/copy: 200 with an empty body. The copy has
// the source's details and digest (the manifest is the same) and is the
// newest model in /api/tags.
func (s *Server) handleCopy(w http.ResponseWriter, r *http.Request) {
	var req api.CopyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	src := model.ParseName(req.Source)
	if !src.IsValid() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("source %q is invalid", req.Source))
		return
	}
	dst := model.ParseName(req.Destination)
	if !dst.IsValid() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("destination %q is invalid", req.Destination))
		return
	}
	dst = s.canonicalName(dst)
	e := s.lookup(req.Source)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found", req.Source))
		return
	}
	m := e.Model
	m.Name = dst.DisplayShortest()
	m.Loaded = false
	s.install(newEntry(m, time.Now()))
	w.WriteHeader(http.StatusOK)
}

// acquireModel marks e as in use, loading it first when it is not resident.
// Loads are serialised, like Ollama's scheduler, and take LoadDuration.
// It returns the context error when the client goes away while waiting.
func (s *Server) acquireModel(ctx context.Context, e *entry, keepAlive time.Duration, numCtx int) error {
	if s.useResident(e, keepAlive, numCtx) {
		return nil
	}
	select {
	case s.loading <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.loading }()
	if s.useResident(e, keepAlive, numCtx) {
		return nil
	}
	if !sleep(ctx, s.cfg.LoadDuration) {
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loaded[e.key] = &residency{
		expiresAt:     time.Now().Add(keepAlive),
		refs:          1,
		contextLength: cmp.Or(max(numCtx, 0), defaultContextLength),
	}
	return nil
}

// useResident takes a reference on e if it is loaded and not expired.
func (s *Server) useResident(e *entry, keepAlive time.Duration, numCtx int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.expireLocked(now)
	r := s.loaded[e.key]
	if r == nil {
		return false
	}
	r.refs++
	r.expiresAt = now.Add(keepAlive)
	if numCtx > 0 {
		r.contextLength = numCtx
	}
	return true
}

// releaseModel drops a reference taken by acquireModel and restarts the
// keep-alive timer; keep_alive 0 unloads the model once it is idle.
func (s *Server) releaseModel(e *entry, keepAlive time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.loaded[e.key]
	if r == nil {
		return
	}
	r.refs--
	r.expiresAt = time.Now().Add(keepAlive)
	if r.refs <= 0 && (keepAlive == 0 || r.expireWhenIdle) {
		delete(s.loaded, e.key)
	}
}

// unloadModel answers keep_alive 0 with an empty prompt: the model leaves
// /api/ps now, or when its running requests finish.
func (s *Server) unloadModel(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.loaded[e.key]
	switch {
	case r == nil:
	case r.refs > 0:
		r.expireWhenIdle = true
	default:
		delete(s.loaded, e.key)
	}
}

// expireLocked unloads idle models whose keep-alive has run out.
func (s *Server) expireLocked(now time.Time) {
	for k, r := range s.loaded {
		if r.refs <= 0 && now.After(r.expiresAt) {
			delete(s.loaded, k)
		}
	}
}

// handleTags serves GET|HEAD /api/tags.
func (s *Server) handleTags(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	models := make([]api.ListModelResponse, 0, len(s.models))
	for _, e := range s.models {
		models = append(models, api.ListModelResponse{
			Name:         e.Name,
			Model:        e.Name,
			ModifiedAt:   e.modifiedAt,
			Size:         e.Size,
			Digest:       e.Digest,
			Details:      e.listDetails(),
			Capabilities: e.capabilities(),
		})
	}
	s.mu.Unlock()
	slices.SortStableFunc(models, func(a, b api.ListModelResponse) int {
		return cmp.Compare(b.ModifiedAt.Unix(), a.ModifiedAt.Unix())
	})
	writeJSON(w, http.StatusOK, api.ListResponse{Models: models})
}

// handlePs serves GET /api/ps.
func (s *Server) handlePs(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	s.expireLocked(time.Now())
	models := []api.ProcessModelResponse{}
	for _, e := range s.models {
		r := s.loaded[e.key]
		if e.key == "" || r == nil {
			continue
		}
		models = append(models, api.ProcessModelResponse{
			Name:          e.Name,
			Model:         e.Name,
			Size:          e.Size,
			Digest:        e.Digest,
			Details:       e.details(),
			ExpiresAt:     r.expiresAt,
			SizeVRAM:      e.Size,
			ContextLength: r.contextLength,
		})
	}
	s.mu.Unlock()
	slices.SortStableFunc(models, func(a, b api.ProcessModelResponse) int {
		return cmp.Compare(b.ExpiresAt.Unix(), a.ExpiresAt.Unix())
	})
	writeJSON(w, http.StatusOK, api.ProcessResponse{Models: models})
}
