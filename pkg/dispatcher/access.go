package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Access with HTTP API keys (docs/security.md). With Options.Keys set, every
// route but the public ones needs a key in force: 401 without one, 403 for a
// route or model the key may not use. Nothing is queued for a refused
// request.

// publicRoutes answer without a key: what Ollama clients probe before they
// send anything (/ and /api/version) and the probes of orchestrators.
var publicRoutes = map[string]bool{"/": true, "/api/version": true, "/healthz": true, "/readyz": true}

// adminRoute tells whether a route needs an admin key: the route table
// says which (they change every worker's models, spend the workers'
// ollama.com identity, or are refused anyway); and /metrics exposes the
// fleet's.
func (s *Server) adminRoute(r *http.Request) bool {
	if r.URL.Path == "/metrics" {
		return true
	}
	_, pattern := s.mux.Handler(r)
	_, path, _ := strings.Cut(pattern, " ")
	for _, rt := range job.Routes() {
		if rt.Path == path {
			return rt.Admin
		}
	}
	return false
}

type keyContext struct{}

// requestKey returns the key the request was authenticated with; ok is false
// when keys are off.
func requestKey(r *http.Request) (apikey.Key, bool) {
	k, ok := r.Context().Value(keyContext{}).(apikey.Key)
	return k, ok
}

// secretOf returns the key a request presents: Authorization: Bearer, as
// the OpenAI and Ollama SDKs send it, or x-api-key, as Anthropic's does.
func secretOf(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", fmt.Errorf("%w: the Authorization header must be \"Bearer <key>\"", apikey.ErrMalformed)
		}
		return strings.TrimSpace(secret), nil
	}
	return r.Header.Get("X-Api-Key"), nil
}

// authenticate checks the request's key before the route's handler runs,
// and puts the key in the request's context.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if s.opts.Keys == nil || publicRoutes[r.URL.Path] || r.Method == http.MethodOptions {
		return r, true
	}
	f := formatOf(r.URL.Path)
	secret, err := secretOf(r)
	var k apikey.Key
	if err == nil {
		k, err = s.opts.Keys.Authenticate(secret, time.Now())
	}
	if errors.Is(err, apikey.ErrStale) {
		w.Header().Set("Retry-After", "2")
		f.failForwarded(w, http.StatusServiceUnavailable, "API keys are unavailable: this dispatcher has lost sight of the key bucket, so it cannot see revocations; try again or another dispatcher")
		return r, false
	}
	if err != nil {
		s.metrics.refused.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="ollamamax"`)
		f.refuse(w, http.StatusUnauthorized, unauthorizedMessage(err))
		return r, false
	}
	if s.adminRoute(r) && k.Role != apikey.Admin {
		s.metrics.refused.WithLabelValues("forbidden").Inc()
		f.refuse(w, http.StatusForbidden, fmt.Sprintf("%s %s needs an admin API key; key %s has the role %s", r.Method, r.URL.Path, k.ID, k.Role))
		return r, false
	}
	return r.WithContext(context.WithValue(r.Context(), keyContext{}, k)), true
}

func unauthorizedMessage(err error) string {
	switch {
	case errors.Is(err, apikey.ErrMissing):
		return "missing API key: send it as \"Authorization: Bearer <key>\" or \"x-api-key: <key>\""
	case errors.Is(err, apikey.ErrMalformed):
		return err.Error() + " (OllamaMax keys look like omx_<id>_<secret>)"
	}
	return err.Error()
}

// allowModel refuses, with 403, a request for a model its key may not use.
func (s *Server) allowModel(w http.ResponseWriter, r *http.Request, f format, model string) bool {
	k, ok := requestKey(r)
	if !ok {
		return true
	}
	c, err := job.CanonicalModel(model)
	if err == nil && k.Allows(c) {
		return true
	}
	s.metrics.refused.WithLabelValues("forbidden").Inc()
	f.refuse(w, http.StatusForbidden, fmt.Sprintf("model '%s' is not allowed for API key %s", model, k.ID))
	return false
}

// visible reports whether a listing shows the model to the request's key.
func visible(r *http.Request, name string) bool {
	k, ok := requestKey(r)
	if !ok {
		return true
	}
	c, err := job.CanonicalModel(name)
	return err == nil && k.Allows(c)
}

// visibleModels filters a model listing for the request's key; name is a
// listed model's name.
func visibleModels[M any](r *http.Request, models []M, name func(M) string) []M {
	if _, ok := requestKey(r); !ok {
		return models
	}
	out := make([]M, 0, len(models))
	for _, m := range models {
		if visible(r, name(m)) {
			out = append(out, m)
		}
	}
	return out
}

func listedName(m api.ListModelResponse) string    { return m.Model }
func loadedName(m api.ProcessModelResponse) string { return m.Model }
