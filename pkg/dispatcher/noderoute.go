package dispatcher

import (
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Node routes without a model (/api/status, the experimental web search,
// web fetch and model recommendations) are answered by one ready worker's
// Ollama, whose version has the route: they say something about that
// Ollama (its cloud status, its ollama.com identity), not about a model.
// ?nodes=a,b and ?label=key=value choose among the workers, as for a pull.

// handleNodeRoute sends the request to one ready worker whose Ollama has rt.
// Without a ready worker it answers 503; when no ready worker's Ollama has
// the route, 404 as such an Ollama's router does.
func (s *Server) handleNodeRoute(rt job.Route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Method != http.MethodGet {
			var ok bool
			if body, ok = readBody(w, r, s.live().MaxBody, native); !ok {
				return
			}
		}
		if !s.rateLimit(w, r, native) {
			return
		}
		ready := s.targets(r, nil)
		if len(ready) == 0 {
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, "no ready worker")
			return
		}
		nodes := s.targets(r, func(n *fleet.Node) bool { return rt.In(n.OllamaVersion) })
		if len(nodes) == 0 {
			notFound(w)
			return
		}
		n := nodes[rand.IntN(len(nodes))]
		st, err := s.req.Command(n.ID, job.NewID(), rt.Path, body)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		defer st.Close()
		s.relay(w, r, st, native, s.opts.CommandWait, nil)
	}
}

// notFound is the answer of gin's router for a route it does not have.
func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, "404 page not found") // A failed write means the client left.
}
