// Package ollamasim is an HTTP server that behaves like Ollama 0.32.15 on
// the wire, for tests, demos and benchmarks.
//
// It serves the native endpoints a queue in front of Ollama relies on (/,
// /api/version, /api/status, /api/tags, /api/ps, /api/show, /api/generate,
// /api/chat, /api/embed, /api/embeddings, /api/pull, /api/delete and
// /api/copy) with Ollama's status codes, error texts, content types and
// NDJSON streaming, using the types of Ollama's own api package. The
// OpenAI-compatible routes (/v1/chat/completions, /v1/completions,
// /v1/embeddings, /v1/models, /v1/models/{model}, /v1/responses and
// /v1/audio/transcriptions) and the Anthropic-compatible /v1/messages wrap
// the native handlers with Ollama's own openai and anthropic packages, the
// way Ollama's middleware does, quirks included. What Ollama forwards to
// ollama.com (cloud models, /api/experimental/web_search and web_fetch, the
// account routes) fails as it does on an Ollama with no internet. Text is
// deterministic: the same request to any simulator with the same
// Config.Seed yields byte-identical output, and like a model decoding
// greedily the simulator continues its own partial answers (see resume.go),
// so a stream moved to another simulator mid-way completes byte for byte.
// Pacing, parallelism, queue limits, pull time and failures are
// configurable, and Stats reports what happened.
//
// It models what makes models heavy to schedule, as Ollama does it (see
// residency.go and cache.go):
//
//   - Load time: a request for a model that is not loaded waits
//     Config.LoadDuration, or the model's own Model.LoadDuration, reported
//     in load_duration; it is paid on first use and again after the model
//     was unloaded (keep_alive 0, its keep-alive ran out) or evicted.
//     Loads happen one at a time.
//   - Config.MaxLoadedModels, like OLLAMA_MAX_LOADED_MODELS (0, the
//     default, is no limit): loading one more model evicts an idle one
//     (shortest keep-alive, then least recently used) or, when all are
//     busy, waits until the one it picked has finished; /api/ps shows the
//     change.
//   - Prompt-cache reuse: each loaded model keeps Config.PromptCacheSlots
//     prompts with their answers; a generation whose prompt extends one (a
//     chat's next turn, a generate with the context it got back) evaluates
//     only the new tokens, at Config.PromptTokensPerSecond on top of
//     Config.TimeToFirstToken, so it starts sooner. As in Ollama 0.32,
//     prompt_eval_count still counts the whole prompt; only
//     prompt_eval_duration shrinks. Eviction or unloading empties the cache.
//
// Stats counts loads, evictions, prompt tokens and those found in the cache.
//
// Production code must not import this package.
package ollamasim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a simulated Ollama. It implements http.Handler and is safe for
// concurrent use. It owns no goroutines: every request runs on the caller's.
type Server struct {
	cfg    Config
	routes map[string]map[string]http.HandlerFunc // path -> method -> handler

	slots       chan struct{} // one token per running generation, capacity Parallel
	waiting     atomic.Int64  // requests waiting for a slot
	loading     chan struct{} // capacity 1: model loads happen one at a time
	loadWaiting atomic.Int64  // requests waiting for their turn to load

	mu       sync.Mutex // guards the fields below
	models   []*entry
	loaded   map[string]*residency // by entry.key
	unloaded chan struct{}         // closed (and replaced) when a model unloads
	tick     uint64                // orders uses of models and cached prompts
	failure  Failure

	requests     atomic.Int64
	active       atomic.Int64
	maxActive    atomic.Int64
	completed    atomic.Int64
	canceled     atomic.Int64
	tokens       atomic.Int64
	loads        atomic.Int64
	evictions    atomic.Int64
	promptTokens atomic.Int64
	cacheHits    atomic.Int64
	cachedTokens atomic.Int64
}

// New returns a Server for cfg with zero fields set to their defaults.
// It does not validate cfg; see Config.Validate.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:      cfg,
		slots:    make(chan struct{}, cfg.Parallel),
		loading:  make(chan struct{}, 1),
		loaded:   make(map[string]*residency),
		unloaded: make(chan struct{}),
	}
	s.SetModels(cfg.Models)
	s.cfg.Models = nil // the inventory owns them now
	s.routes = map[string]map[string]http.HandlerFunc{
		"/":               {http.MethodHead: s.handleRoot, http.MethodGet: s.handleRoot},
		"/api/version":    {http.MethodHead: s.handleVersion, http.MethodGet: s.handleVersion},
		"/api/status":     {http.MethodGet: s.handleStatus},
		"/api/tags":       {http.MethodHead: s.handleTags, http.MethodGet: s.handleTags},
		"/api/ps":         {http.MethodGet: s.handlePs},
		"/api/show":       {http.MethodPost: s.handleShow},
		"/api/generate":   {http.MethodPost: s.handleGenerate},
		"/api/chat":       {http.MethodPost: s.handleChat},
		"/api/embed":      {http.MethodPost: s.handleEmbed},
		"/api/embeddings": {http.MethodPost: s.handleEmbeddings},
		"/api/pull":       {http.MethodPost: s.handlePull},
		"/api/delete":     {http.MethodDelete: s.handleDelete},
		"/api/copy":       {http.MethodPost: s.handleCopy},
		"/api/me":         {http.MethodPost: s.handleMe},
		"/api/signout":    {http.MethodPost: s.handleSignout},
		keysRoute:         {http.MethodDelete: s.handleSignout},

		"/api/experimental/web_search":            {http.MethodPost: s.handleWebSearch},
		"/api/experimental/web_fetch":             {http.MethodPost: s.handleWebFetch},
		"/api/experimental/model-recommendations": {http.MethodGet: s.handleModelRecommendations},

		"/v1/chat/completions":     {http.MethodPost: cloudPassthrough(s.handleChatCompletions)},
		"/v1/completions":          {http.MethodPost: cloudPassthrough(s.handleCompletions)},
		"/v1/embeddings":           {http.MethodPost: cloudPassthrough(s.handleEmbeddingsCompat)},
		"/v1/models":               {http.MethodGet: s.handleModels},
		modelRoute:                 {http.MethodGet: s.handleModel},
		"/v1/responses":            {http.MethodPost: cloudPassthrough(s.handleResponses)},
		"/v1/audio/transcriptions": {http.MethodPost: s.handleTranscriptions},
		"/v1/messages":             {http.MethodPost: cloudPassthrough(s.handleMessages)},
	}
	return s
}

// The routes with a parameter, gin's /v1/models/:model and
// /api/user/keys/:encodedKey.
const (
	modelRoute = "/v1/models/:model"
	keysRoute  = "/api/user/keys/:encodedKey"
)

// routeOf returns the routes key for path and the value of its parameter,
// which like gin's is exactly one non-empty path segment.
func routeOf(path string) (key, param string) {
	for _, route := range []string{modelRoute, keysRoute} {
		prefix := route[:strings.LastIndex(route, "/")+1]
		if rest, ok := strings.CutPrefix(path, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
			return route, rest
		}
	}
	return path, ""
}

// methodOrder is the order of gin's method trees in Ollama's router, which
// decides the order of the Allow header on a 405.
var methodOrder = []string{http.MethodHead, http.MethodGet, http.MethodPost, http.MethodDelete}

// ServeHTTP routes like Ollama's gin router: 404 "404 page not found" for
// unknown paths, 405 "405 method not allowed" with an Allow header for a
// known path with the wrong method, and a redirect for a trailing slash.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	key, param := routeOf(path)
	if h := s.routes[key][r.Method]; h != nil {
		if param != "" {
			r.SetPathValue(key[strings.LastIndex(key, ":")+1:], param)
		}
		h(w, r)
		return
	}
	if trimmed, _ := routeOf(strings.TrimSuffix(path, "/")); path != "/" && strings.HasSuffix(path, "/") && s.routes[trimmed][r.Method] != nil {
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet {
			code = http.StatusTemporaryRedirect
		}
		u := *r.URL
		u.Path = strings.TrimSuffix(path, "/")
		http.Redirect(w, r, u.String(), code)
		return
	}
	var allowed []string
	for _, m := range methodOrder {
		if m != r.Method && s.routes[key][m] != nil {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writePlain(w, http.StatusMethodNotAllowed, "text/plain", "405 method not allowed")
		return
	}
	writePlain(w, http.StatusNotFound, "text/plain", "404 page not found")
}

func (s *Server) handleRoot(w http.ResponseWriter, _ *http.Request) {
	writePlain(w, http.StatusOK, "text/plain; charset=utf-8", "Ollama is running")
}

func (s *Server) handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Version string `json:"version"`
	}{s.cfg.Version})
}

// Failure describes failures injected into generate, chat and embed
// requests that passed validation. The zero Failure injects nothing.
type Failure struct {
	// Status, if non-zero, fails every request before the first byte with
	// this status and {"error": Message}.
	Status int
	// Message is the error text; empty means Ollama's text for a crashed
	// runner.
	Message string
	// AfterTokens, if positive, stops generations after this many tokens:
	// streams end with {"error": Message} as the last NDJSON line and no done
	// line (status 200, as in Ollama); stream:false requests get 500.
	AfterTokens int
	// Hang makes requests block until the client goes away, like a stuck
	// runner. A hanging generation holds its slot and counts as active.
	Hang bool
}

// runnerCrashed is what Ollama reports when its runner dies mid-request.
const runnerCrashed = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details"

func (f Failure) message() string {
	if f.Message == "" {
		return runnerCrashed
	}
	return f.Message
}

// SetFailure replaces the injected failure; Failure{} clears it. Requests
// already past validation keep the failure they started with.
func (s *Server) SetFailure(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

func (s *Server) currentFailure() Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// Stats counts what the server has done since New. Requests through the
// OpenAI and Anthropic routes count as the native generate, chat or embed
// request they become; those the compatibility layer answers itself (bad
// input, cloud models), and model management (pull, copy, delete), are not
// counted.
type Stats struct {
	Requests  int64 // generate/chat/embed requests received, valid or not, except _debug_render_only ones
	Active    int64 // generations (and embedding calls) holding a slot now
	MaxActive int64 // highest Active ever observed; never above Parallel
	Completed int64 // generations that ran to their done line, and embedding calls answered
	Canceled  int64 // requests stopped because the client went away
	Tokens    int64 // tokens emitted in total

	// Loads counts models loaded for a request (models Loaded from the start
	// are not counted), each of which waited its load time.
	Loads int64
	// Evictions counts models unloaded to make room for another under
	// MaxLoadedModels; unloads by keep-alive are not counted.
	Evictions int64
	// PromptTokens counts the prompt tokens of generations that got as far
	// as prompt evaluation: the sum of their prompt_eval_count.
	PromptTokens int64
	// CacheHits counts generations that found part of their prompt in the
	// model's prompt cache, and CachedTokens the prompt tokens so found;
	// PromptTokens - CachedTokens were evaluated.
	CacheHits    int64
	CachedTokens int64
}

// Stats returns a snapshot of the counters. Each field is read atomically,
// the set as a whole is not.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:  s.requests.Load(),
		Active:    s.active.Load(),
		MaxActive: s.maxActive.Load(),
		Completed: s.completed.Load(),
		Canceled:  s.canceled.Load(),
		Tokens:    s.tokens.Load(),

		Loads:        s.loads.Load(),
		Evictions:    s.evictions.Load(),
		PromptTokens: s.promptTokens.Load(),
		CacheHits:    s.cacheHits.Load(),
		CachedTokens: s.cachedTokens.Load(),
	}
}

// errServerBusy is Ollama's ErrMaxQueue text, two spaces included.
var errServerBusy = errors.New("server busy, please try again.  maximum pending requests exceeded")

// acquireSlot waits for one of the Parallel slots. It fails with
// errServerBusy when MaxQueue requests are already waiting, or with the
// context error when the client goes away. The returned func releases the
// slot and must be called once.
func (s *Server) acquireSlot(ctx context.Context) (release func(), err error) {
	release = func() {
		s.active.Add(-1)
		<-s.slots
	}
	select {
	case s.slots <- struct{}{}:
		s.markActive()
		return release, nil
	default:
	}
	if s.waiting.Add(1) > int64(s.cfg.MaxQueue) {
		s.waiting.Add(-1)
		return nil, errServerBusy
	}
	defer s.waiting.Add(-1)
	select {
	case s.slots <- struct{}{}:
		s.markActive()
		return release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// markActive counts a generation that holds a slot. Active only rises while
// a slot is held, so MaxActive can never exceed Parallel.
func (s *Server) markActive() {
	n := s.active.Add(1)
	for {
		m := s.maxActive.Load()
		if n <= m || s.maxActive.CompareAndSwap(m, n) {
			return
		}
	}
}

// sleep waits for d or until ctx is done, and reports whether ctx is still
// live. A non-positive d only checks ctx.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// errorResponse is Ollama's error body.
type errorResponse struct {
	Error string `json:"error"`
}

// statusCanceled is what Ollama answers when the client leaves while the
// model loads; nobody reads it, but it keeps access logs honest.
const statusCanceled = 499

// decodeBody decodes r's body the way gin's ShouldBindJSON does: an empty
// body is "missing request body", anything else that fails is the
// encoding/json error text. It writes the 400 itself and reports success.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if msg := readBody(r, v); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// readBody is decodeBody without the answer: it returns the error text for
// the 400, or "" on success.
func readBody(r *http.Request, v any) string {
	err := json.NewDecoder(r.Body).Decode(v)
	switch {
	case errors.Is(err, io.EOF):
		return "missing request body"
	case err != nil:
		return err.Error()
	}
	return ""
}

// writeJSON writes v like gin's c.JSON: application/json; charset=utf-8 and
// no trailing newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONType(w, status, "application/json; charset=utf-8", v)
}

func writeJSONType(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types get here; they always marshal.
		writePlain(w, http.StatusInternalServerError, "text/plain; charset=utf-8", err.Error())
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left; there is nobody to tell
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}

func writePlain(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body) // a failed write means the client left
}
