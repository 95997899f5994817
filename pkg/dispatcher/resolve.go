package dispatcher

import (
	"cmp"
	"fmt"
	"net/http"
	"strings"

	"github.com/ollama/ollama/types/model"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Model names, resolved as Ollama 0.32 resolves them before it runs
// anything: surrounding whitespace is dropped (its internal/modelref), a
// name that does not parse is 400 "invalid model name" on every route (and
// one with two source suffixes 400 in modelref's words), and a model it
// does not have is 404 with each route's own message, the name as the
// request gave it.

// modelNameError is what Ollama answers, with 400, for a model name it
// cannot take (its parseAndValidateModelRef), or "" for one it can.
func modelNameError(name string) string {
	base, explicit := modelBase(name)
	if _, nested := modelBase(base); explicit && nested {
		return fmt.Sprintf("use either :local or :cloud, not both: %q", strings.TrimSpace(name))
	}
	if !model.ParseName(base).IsValid() {
		return "invalid model name"
	}
	return ""
}

// modelBase is name without the whitespace around it and without a source
// suffix (:cloud, :local, a -cloud tag), which names where to run the model,
// not the model; explicit tells whether it had one (internal/modelref).
func modelBase(name string) (base string, explicit bool) {
	base = strings.TrimSpace(name)
	if i := strings.LastIndex(base, ":"); i >= 0 {
		suffix := strings.ToLower(strings.TrimSpace(base[i+1:]))
		switch {
		case suffix == "cloud" || suffix == "local":
			return base[:i], true
		case !strings.Contains(suffix, "/") && strings.HasSuffix(suffix, "-cloud"):
			tag := strings.TrimSpace(base[i+1:])
			return base[:i+1] + tag[:len(tag)-len("-cloud")], true
		}
	}
	return base, false
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
// for a name Ollama cannot take, 404 when no worker has the model or ever
// served it (a model some worker served before waits in the queue), and
// its router's 404 when live workers have the model but none's Ollama has
// the route (docs/api.md, "Mixed fleets").
func (s *Server) resolveJob(w http.ResponseWriter, r *http.Request, route string, f format, name string) (string, bool) {
	canonical, err := job.CanonicalModel(name)
	if msg := modelNameError(name); msg != "" || err != nil {
		f.failForwarded(w, http.StatusBadRequest, cmp.Or(msg, "invalid model name"))
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
		f.failForwarded(w, http.StatusNotFound, modelNotFound(route, name))
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

// showNotFound is what Ollama's show handler answers for a model it does
// not have, among the fleet's models listed: 400 for a name it cannot
// take, else 404 naming the model in its shortest form, each part in the
// case of a listed model's part that matches it (getExistingName).
func showNotFound(name string, listed []string) (int, string) {
	if msg := modelNameError(name); msg != "" {
		return http.StatusBadRequest, msg
	}
	base, _ := modelBase(name)
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
