package ollamasim

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

// The simulator is an Ollama that is not signed in to ollama.com and has no
// internet: cloud is not disabled, so what Ollama would forward to
// ollama.com (cloud models, web search and fetch) fails to connect.

// handleStatus serves GET /api/status: cloud is not disabled, by nothing.
func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.StatusResponse{Cloud: api.CloudStatus{Disabled: false, Source: "none"}})
}

// handleWebSearch serves POST /api/experimental/web_search and handleWebFetch
// /api/experimental/web_fetch: Ollama forwards the body as it is to
// ollama.com's /api/web_search or /api/web_fetch, refusing only an empty one.
func (s *Server) handleWebSearch(w http.ResponseWriter, r *http.Request) {
	webProxy(w, r, "/api/web_search")
}

func (s *Server) handleWebFetch(w http.ResponseWriter, r *http.Request) {
	webProxy(w, r, "/api/web_fetch")
}

func webProxy(w http.ResponseWriter, r *http.Request, path string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		writeError(w, http.StatusBadRequest, "missing request body")
		return
	}
	cloudUnreachable(w, r, path)
}

// handleModelRecommendations serves GET
// /api/experimental/model-recommendations: without ollama.com, Ollama's
// built-in list (v0.32.15 server/model_recommendations.go).
func (s *Server) handleModelRecommendations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.ModelRecommendationsResponse{Recommendations: defaultRecommendations})
}

var defaultRecommendations = []api.ModelRecommendation{
	{Model: "kimi-k2.6:cloud", Description: "State-of-the-art coding, long-horizon execution, and multimodal agent swarm capability", ContextLength: 262_144, MaxOutputTokens: 262_144},
	{Model: "glm-5.1:cloud", Description: "Reasoning and code generation", ContextLength: 202_752, MaxOutputTokens: 131_072},
	{Model: "qwen3.5:cloud", Description: "Reasoning, coding, and agentic tool use with vision", ContextLength: 262_144, MaxOutputTokens: 32_768},
	{Model: "minimax-m2.7:cloud", Description: "Fast, efficient coding and real-world productivity", ContextLength: 204_800, MaxOutputTokens: 128_000},
	{Model: "gemma4", Description: "Reasoning and code generation locally", VRAMBytes: 12_000_000_000},
	{Model: "qwen3.5", Description: "Reasoning, coding, and visual understanding locally", VRAMBytes: 14_000_000_000},
}

// cloudUnreachable answers a request Ollama would forward to ollama.com
// (cloud models, web search and fetch) as an Ollama that is not signed in
// and has no internet does: it signs the request with the server's key,
// adds a ts query parameter, and fails to resolve the host, 502 with Go's
// error text. Real Ollama also names the DNS server it asked ("lookup
// ollama.com on 10.0.0.53:53: no such host"); the simulator has none to name.
func cloudUnreachable(w http.ResponseWriter, r *http.Request, path string) {
	q := r.URL.Query()
	q.Set("ts", itoa(time.Now().Unix()))
	target := url.URL{Scheme: "https", Host: "ollama.com:443", Path: path, RawQuery: q.Encode()}
	method := r.Method[:1] + strings.ToLower(r.Method[1:]) // as net/url.Error writes it
	writeError(w, http.StatusBadGateway, fmt.Sprintf("%s %q: dial tcp: lookup ollama.com: no such host", method, target.String()))
}

// handleMe serves POST /api/me, which asks ollama.com who the server's key
// belongs to: without a connection, Ollama reports the account unavailable.
func (s *Server) handleMe(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusServiceUnavailable, "account unavailable")
}

// handleSignout serves POST /api/signout and the deprecated DELETE
// /api/user/keys/{key}, which tell ollama.com to forget the server's key.
func (s *Server) handleSignout(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusInternalServerError, "there was an error signing out")
}
