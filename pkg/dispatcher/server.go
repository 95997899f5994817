package dispatcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// APIVersion is the Ollama API version the dispatcher reports when no worker
// is up to tell its Ollama's version: the version of the Ollama api package
// OllamaMax is built and tested against.
const APIVersion = "0.17.4"

// Options configure the HTTP shim.
type Options struct {
	// MaxBody is the largest request body accepted, in bytes; larger ones get 413.
	MaxBody int64
	// QueueWait bounds how long a job waits for a worker to take it. After it,
	// the client gets 503 and the job is dropped from the queue.
	QueueWait time.Duration
	// Logger receives the log.
	Logger *slog.Logger
}

// Server is the HTTP shim. It is an http.Handler.
type Server struct {
	opts Options
	q    *queue.Queue
	req  *queue.Requester
	view *fleet.View
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewServer returns the HTTP shim over the queue, submitting through req and
// answering model listings from view.
func NewServer(q *queue.Queue, req *queue.Requester, view *fleet.View, o Options) *Server {
	s := &Server{opts: o, q: q, req: req, view: view, log: o.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /{$}", s.handleRoot)
	s.mux.HandleFunc("GET /api/version", s.handleVersion)
	s.mux.HandleFunc("GET /api/tags", s.handleTags)
	s.mux.HandleFunc("GET /api/ps", s.handlePS)
	s.mux.HandleFunc("POST /api/generate", s.handleJob("/api/generate"))
	s.mux.HandleFunc("POST /api/chat", s.handleJob("/api/chat"))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "Ollama is running") // A failed write means the client left.
	}
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	v := s.view.OllamaVersion()
	if v == "" {
		v = APIVersion
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": v})
}

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ListResponse{Models: s.view.Models()})
}

func (s *Server) handlePS(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ProcessResponse{Models: s.view.Loaded()})
}

// writeJSON writes v the way Ollama's gin handlers do.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, queue.ErrorBody("encode response: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b) // A failed write means the client left.
}

// writeError writes Ollama's error shape with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(queue.ErrorBody(msg)) // A failed write means the client left.
}

// readBody reads a request body of at most max bytes. It writes the error
// response itself and returns ok=false when the body is missing or too large.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit is %d bytes", max))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return nil, false
	case len(bytes.TrimSpace(body)) == 0:
		writeError(w, http.StatusBadRequest, "missing request body")
		return nil, false
	}
	return body, true
}

// decode parses body into v as Ollama does (gin's ShouldBindJSON), so a client
// gets the same error text for malformed JSON and wrong field types.
func decode(body []byte, v any) error {
	return json.NewDecoder(bytes.NewReader(body)).Decode(v)
}

// resolveModel returns the canonical name of a model some worker has or has
// served; ok=false means no worker knows it.
func (s *Server) resolveModel(r *http.Request, name string) (string, bool, error) {
	c, err := job.CanonicalModel(name)
	if err != nil {
		return "", false, nil
	}
	if s.view.HasModel(c) {
		return c, true, nil
	}
	ok, err := s.q.HasConsumer(r.Context(), c)
	return c, ok, err
}
