package ollamasim

import (
	"cmp"
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
// state; models that go are unloaded; new models with Loaded set are
// loaded, without load time, as long as MaxLoadedModels allows.
// It is safe for concurrent use; requests already running are unaffected.
func (s *Server) SetModels(models []Model) {
	now := time.Now()
	entries := buildEntries(models, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models = entries
	keep := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.key != "" {
			keep[e.key] = true
		}
	}
	for k := range s.loaded {
		if !keep[k] {
			s.unloadLocked(k, false)
		}
	}
	for _, e := range entries {
		if e.key == "" || !e.Loaded || s.loaded[e.key] != nil {
			continue
		}
		if s.cfg.MaxLoadedModels > 0 && len(s.loaded) >= s.cfg.MaxLoadedModels {
			break // Validate reports this; at run time the first ones win
		}
		s.loaded[e.key] = s.newResidency(now, defaultKeepAlive, defaultContextLength)
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
			s.unloadLocked(e.key, false)
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
