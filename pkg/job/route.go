package job

import "strings"

// API is the family of an Ollama route: it decides the shape of errors and
// of streamed responses.
type API int

const (
	Native    API = iota // Ollama's /api routes: NDJSON, {"error": "..."}
	OpenAI               // /v1 OpenAI routes: server-sent data events, OpenAI's error object
	Anthropic            // /v1/messages: named server-sent events, {"type":"error","error":{...}}
)

// Continuation says how a worker continues a half-streamed answer of a route
// on another worker (docs/protocol.md, "Resuming").
type Continuation int

const (
	// NoContinuation: a redelivered job that had sent data ends with an error.
	NoContinuation Continuation = iota
	// ContinueChat appends the partial answer as a final assistant message,
	// which Ollama continues (/api/chat, /v1/chat/completions).
	ContinueChat
	// ContinueGenerate renders the prompt and appends the partial answer, in
	// raw mode.
	ContinueGenerate
	// ContinueMessages appends the partial answer as a final assistant
	// message of Anthropic content blocks (thinking, text).
	ContinueMessages
	// ContinueResponses appends the partial answer as a final assistant
	// output message to the Responses input.
	ContinueResponses
)

// Serving is how OllamaMax answers a route.
type Serving int

const (
	// Queued routes are jobs on the model's subject, run by any worker that
	// serves the model.
	Queued Serving = iota + 1
	// Node routes are node commands, sent to one worker's Ollama directly
	// (model metadata and model management).
	Node
	// Fleet routes are answered by the dispatcher from the fleet's records
	// (listings, version, status).
	Fleet
	// Refused routes get 501 with the reason: they cannot mean anything for
	// a fleet (creating, pushing and uploading models on one machine; the
	// ollama.com account each worker's Ollama is signed in to).
	Refused
	// Removed routes are gone from current Ollama; they answer its 404.
	Removed
)

// Route is one Ollama route, and what OllamaMax knows of it.
type Route struct {
	Path   string
	Method string // the HTTP method Ollama expects
	Head   bool   // Ollama serves HEAD on it too
	API    API
	Serve  Serving
	// ModelField is the body field naming the model ("source" for copy;
	// show, pull and delete also take "name"; a form field of the multipart
	// transcription body), "" for routes without one.
	ModelField string
	// Since is the first Ollama version with the route ("" for routes older
	// than any Ollama OllamaMax supports, 0.12), Until the first without it
	// ("" for none), so a worker knows whether its Ollama has it.
	Since, Until string
	// Queued routes may be jobs; Node routes may be node commands. Both
	// mirror Serve and a Queued route may also be a node command (show).
	Queued, Node bool
	// Changes tells whether a node command changes the worker's models.
	Changes bool
	// Admin tells whether an HTTP API key needs the admin role for the
	// route: it changes every worker's models, or spends the workers'
	// ollama.com identity (docs/security.md).
	Admin bool
	// Form tells whether the route's body is a multipart/form-data form, not
	// JSON; a job for it states its Content-Type in HeaderBodyType.
	Form bool
	// Streams tells whether the route streams unless the body says
	// "stream": false (for /v1 routes: unless it says "stream": true).
	Streams bool
	// Batch tells whether a batch file line may name the route.
	Batch    bool
	Continue Continuation
}

// routes is the one table of Ollama's routes: the dispatcher serves from it,
// a worker refuses a job or command for any route it does not mark Queued
// or Node (so a job can never reach, say, /api/create), and docs/api.md
// lists it (a test holds the two together).
var routes = []Route{
	{Path: "/api/generate", Method: "POST", API: Native, Serve: Queued, ModelField: "model", Queued: true, Streams: true, Batch: true, Continue: ContinueGenerate},
	{Path: "/api/chat", Method: "POST", API: Native, Serve: Queued, ModelField: "model", Queued: true, Streams: true, Batch: true, Continue: ContinueChat},
	{Path: "/api/embed", Method: "POST", API: Native, Serve: Queued, ModelField: "model", Queued: true, Batch: true},
	{Path: "/api/embeddings", Method: "POST", API: Native, Serve: Queued, ModelField: "model", Queued: true},
	{Path: "/v1/chat/completions", Method: "POST", API: OpenAI, Serve: Queued, ModelField: "model", Queued: true, Streams: true, Batch: true, Continue: ContinueChat},
	{Path: "/v1/completions", Method: "POST", API: OpenAI, Serve: Queued, ModelField: "model", Queued: true, Streams: true, Batch: true},
	{Path: "/v1/embeddings", Method: "POST", API: OpenAI, Serve: Queued, ModelField: "model", Queued: true, Batch: true},
	{Path: "/v1/messages", Method: "POST", API: Anthropic, Serve: Queued, ModelField: "model", Since: "0.14.0", Queued: true, Streams: true, Continue: ContinueMessages},
	{Path: "/v1/responses", Method: "POST", API: OpenAI, Serve: Queued, ModelField: "model", Since: "0.13.0", Queued: true, Streams: true, Continue: ContinueResponses},
	{Path: "/v1/audio/transcriptions", Method: "POST", API: OpenAI, Serve: Queued, ModelField: "model", Since: "0.20.0", Queued: true, Form: true},
	{Path: "/api/show", Method: "POST", API: Native, Serve: Node, ModelField: "model", Queued: true, Node: true},
	{Path: "/api/pull", Method: "POST", API: Native, Serve: Node, ModelField: "model", Node: true, Changes: true, Admin: true, Streams: true},
	{Path: "/api/delete", Method: "DELETE", API: Native, Serve: Node, ModelField: "model", Node: true, Changes: true, Admin: true},
	{Path: "/api/copy", Method: "POST", API: Native, Serve: Node, ModelField: "source", Node: true, Changes: true, Admin: true},
	{Path: "/api/status", Method: "GET", API: Native, Serve: Node, Node: true},
	{Path: "/api/experimental/web_search", Method: "POST", API: Native, Serve: Node, Since: "0.18.0", Node: true, Admin: true},
	{Path: "/api/experimental/web_fetch", Method: "POST", API: Native, Serve: Node, Since: "0.18.0", Node: true, Admin: true},
	{Path: "/api/experimental/model-recommendations", Method: "GET", API: Native, Serve: Node, Since: "0.22.1", Node: true},
	{Path: "/api/tags", Method: "GET", Head: true, API: Native, Serve: Fleet},
	{Path: "/api/ps", Method: "GET", API: Native, Serve: Fleet},
	{Path: "/api/version", Method: "GET", Head: true, API: Native, Serve: Fleet},
	{Path: "/v1/models", Method: "GET", API: OpenAI, Serve: Fleet},
	{Path: "/v1/models/{model}", Method: "GET", API: OpenAI, Serve: Fleet},
	{Path: "/api/create", Method: "POST", API: Native, Serve: Refused, Admin: true},
	{Path: "/api/push", Method: "POST", API: Native, Serve: Refused, Admin: true},
	{Path: "/api/blobs/{digest}", Method: "POST", Head: true, API: Native, Serve: Refused, Admin: true},
	{Path: "/api/me", Method: "POST", API: Native, Serve: Refused, Admin: true},
	{Path: "/api/signout", Method: "POST", API: Native, Serve: Refused, Admin: true},
	{Path: "/api/user/keys/{encodedKey}", Method: "DELETE", API: Native, Serve: Refused, Admin: true},
	{Path: "/api/experimental/aliases", Method: "GET", API: Native, Serve: Removed, Until: "0.18.0"},
	{Path: "/v1/images/generations", Method: "POST", API: OpenAI, Serve: Removed, Until: "0.32.6"},
	{Path: "/v1/images/edits", Method: "POST", API: OpenAI, Serve: Removed, Until: "0.32.6"},
}

// Routes returns the route table, inference routes first. The slice is a copy.
func Routes() []Route { return append([]Route(nil), routes...) }

// LookupRoute returns the route with path, if OllamaMax carries it as a job
// or node command (Queued or Node); other routes are not jobs.
func LookupRoute(path string) (Route, bool) {
	for _, r := range routes {
		if r.Path == path && (r.Queued || r.Node) {
			return r, true
		}
	}
	return Route{}, false
}

// In tells whether an Ollama of version v has the route; an unknown version
// ("" or unparsable) is taken to have every route that is not removed.
func (r Route) In(v string) bool {
	if _, ok := parseVersion(v); !ok {
		return r.Until == ""
	}
	return CompareVersions(v, r.Since) >= 0 && (r.Until == "" || CompareVersions(v, r.Until) < 0)
}

// CompareVersions compares dotted numeric versions such as 0.17.4, ignoring a
// leading v and a -suffix: negative when a is lower, 0 when equal.
func CompareVersions(a, b string) int {
	pa, _ := parseVersion(a)
	pb, _ := parseVersion(b)
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// parseVersion reads a version's numeric parts; ok is false when it has none.
func parseVersion(v string) (parts []int, ok bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	v, _, _ = strings.Cut(v, "-")
	if v == "" {
		return nil, false
	}
	for _, p := range strings.Split(v, ".") {
		n, digits := 0, 0
		for _, c := range p {
			if c < '0' || c > '9' || n > 1<<20 {
				break
			}
			n, digits = n*10+int(c-'0'), digits+1
		}
		if digits == 0 {
			return nil, false
		}
		parts = append(parts, n)
	}
	return parts, true
}
