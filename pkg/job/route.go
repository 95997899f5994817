package job

// API is the family of an Ollama route: it decides the shape of errors and
// of streamed responses.
type API int

const (
	Native API = iota // Ollama's /api routes: NDJSON, {"error": "..."}
	OpenAI            // /v1 routes: server-sent events, OpenAI's error object
)

// Continuation says how a worker continues a half-streamed answer of a route
// on another worker (docs/protocol.md, "Resuming").
type Continuation int

const (
	// NoContinuation: a redelivered job that had sent data ends with an error.
	NoContinuation Continuation = iota
	// ContinueChat appends the partial answer as a final assistant message,
	// which Ollama continues.
	ContinueChat
	// ContinueGenerate renders the prompt and appends the partial answer, in
	// raw mode.
	ContinueGenerate
)

// Route is one Ollama route OllamaMax carries, and what it needs to know of it.
type Route struct {
	Path   string
	Method string // the HTTP method Ollama expects
	API    API
	// Queued routes may be jobs. Node routes may be node commands, sent to
	// one worker's Ollama directly (model metadata and model management).
	Queued, Node bool
	// Changes tells whether a node command changes the worker's models.
	Changes bool
	// Streams tells whether the route streams unless the body says
	// "stream": false.
	Streams bool
	// Batch tells whether a batch file line may name the route.
	Batch    bool
	Continue Continuation
}

// routes is the one table of the routes jobs and node commands may name. A
// worker refuses any other, so a job can never reach, say, /api/create.
var routes = []Route{
	{Path: "/api/generate", Method: "POST", API: Native, Queued: true, Streams: true, Batch: true, Continue: ContinueGenerate},
	{Path: "/api/chat", Method: "POST", API: Native, Queued: true, Streams: true, Batch: true, Continue: ContinueChat},
	{Path: "/api/embed", Method: "POST", API: Native, Queued: true, Batch: true},
	{Path: "/api/embeddings", Method: "POST", API: Native, Queued: true},
	{Path: "/v1/chat/completions", Method: "POST", API: OpenAI, Queued: true, Streams: true, Batch: true, Continue: ContinueChat},
	{Path: "/v1/completions", Method: "POST", API: OpenAI, Queued: true, Streams: true, Batch: true},
	{Path: "/v1/embeddings", Method: "POST", API: OpenAI, Queued: true, Batch: true},
	{Path: "/api/show", Method: "POST", API: Native, Queued: true, Node: true},
	{Path: "/api/pull", Method: "POST", API: Native, Node: true, Changes: true, Streams: true},
	{Path: "/api/delete", Method: "DELETE", API: Native, Node: true, Changes: true},
	{Path: "/api/copy", Method: "POST", API: Native, Node: true, Changes: true},
}

// Routes returns the route table, inference routes first. The slice is a copy.
func Routes() []Route { return append([]Route(nil), routes...) }

// LookupRoute returns the route with path, if OllamaMax carries it.
func LookupRoute(path string) (Route, bool) {
	for _, r := range routes {
		if r.Path == path {
			return r, true
		}
	}
	return Route{}, false
}
