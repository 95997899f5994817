package dispatcher

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/ollama/ollama/openai"
	"github.com/ollama/ollama/types/model"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Model names, resolved as Ollama 0.32 resolves them before it runs
// anything: surrounding whitespace is dropped (its internal/modelref), a
// name that does not parse is 400 "invalid model name" on every route, and
// a model it does not have is 404 with each route's own message, the name
// as the request gave it.

// validModelName tells whether Ollama would parse name as a model name: its
// parseAndValidateModelRef, whose source suffixes (:cloud, :local, a
// -cloud tag) name where to run the model, not the model.
func validModelName(name string) bool {
	base := strings.TrimSpace(name)
	if i := strings.LastIndex(base, ":"); i >= 0 {
		suffix := strings.ToLower(strings.TrimSpace(base[i+1:]))
		switch {
		case suffix == "cloud" || suffix == "local":
			base = base[:i]
		case !strings.Contains(suffix, "/") && strings.HasSuffix(suffix, "-cloud"):
			base = base[:len(base)-len("-cloud")]
		}
	}
	return model.ParseName(base).IsValid()
}

// modelNotFound is the message of a route's handler for a model it does not
// have: the embedding handlers fail when they schedule the model.
func modelNotFound(route, name string) string {
	switch route {
	case "/api/embed", "/api/embeddings", "/v1/embeddings":
		return fmt.Sprintf("model %q not found, try pulling it first", name)
	}
	return fmt.Sprintf("model '%s' not found", name)
}

// resolveJob returns the canonical name of the model a job for route names,
// or answers the request itself as Ollama would and returns ok=false: 400
// for a name Ollama cannot parse, 404 when no worker has the model or ever
// served it, and its router's 404 when live workers have the model but
// none's Ollama has the route (docs/api.md, "Mixed fleets").
func (s *Server) resolveJob(w http.ResponseWriter, r *http.Request, route string, f format, name string) (string, bool) {
	canonical, err := job.CanonicalModel(name)
	if err != nil || !validModelName(name) {
		failModel(w, f, http.StatusBadRequest, "invalid model name")
		return "", false
	}
	known := s.view.HasModel(canonical)
	if !known {
		if known, err = s.q.HasConsumer(r.Context(), canonical); err != nil {
			w.Header().Set("Retry-After", "1")
			f.failForwarded(w, http.StatusServiceUnavailable, "queue unavailable: "+err.Error())
			return "", false
		}
	}
	if !known {
		failModel(w, f, http.StatusNotFound, modelNotFound(route, name))
		return "", false
	}
	if rt, ok := job.LookupRoute(route); ok && !s.routeServed(rt, canonical) {
		notFound(w)
		return "", false
	}
	return canonical, true
}

// routeServed tells whether a job for rt and the canonical model can find
// a worker whose Ollama has the route: a route of every version can; a
// newer one when no live worker has the model (the job waits for one, which
// decides), or when one of those that have it runs an Ollama that has it.
func (s *Server) routeServed(rt job.Route, canonical string) bool {
	if rt.Since == "" && rt.Until == "" {
		return true
	}
	have := 0
	for _, n := range s.view.Nodes() {
		if n.HasModel(canonical) {
			if rt.In(n.OllamaVersion) {
				return true
			}
			have++
		}
	}
	return have == 0
}

// failModel writes the error of Ollama's handler for a model name: behind
// its OpenAI middleware, which since 0.32 types an error by its status
// (openai.NewError: invalid_request_error, not_found_error), in gin's bare
// application/json.
func failModel(w http.ResponseWriter, f format, status int, msg string) {
	if f != openAI {
		f.failForwarded(w, status, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(openai.NewError(status, msg)) // A failed write means the client left.
}

// showNotFound is what Ollama's show handler answers for a model it does
// not have, among the fleet's models listed: 400 for a name it cannot
// parse, else 404 naming the model in its shortest form, each part in the
// case of a listed model's part that matches it (getExistingName).
func showNotFound(name string, listed []string) (int, string) {
	if !validModelName(name) {
		return http.StatusBadRequest, "invalid model name"
	}
	base := strings.TrimSpace(name)
	n := model.ParseName(base)
	var set model.Name // the parts already given a listed case
	for _, l := range listed {
		e := model.ParseName(l)
		if set.Host == "" && strings.EqualFold(e.Host, n.Host) {
			n.Host, set.Host = e.Host, e.Host
		}
		if set.Namespace == "" && strings.EqualFold(e.Namespace, n.Namespace) {
			n.Namespace, set.Namespace = e.Namespace, e.Namespace
		}
		if set.Model == "" && strings.EqualFold(e.Model, n.Model) {
			n.Model, set.Model = e.Model, e.Model
		}
		if set.Tag == "" && strings.EqualFold(e.Tag, n.Tag) {
			n.Tag, set.Tag = e.Tag, e.Tag
		}
	}
	return http.StatusNotFound, fmt.Sprintf("model '%s' not found", n.DisplayShortest())
}

// listedNames are the names of the fleet's models.
func (s *Server) listedNames() []string {
	models := s.view.Models()
	out := make([]string, len(models))
	for i, m := range models {
		out[i] = m.Model
	}
	return out
}
