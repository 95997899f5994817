package realollama_test

// kind says what a listed difference is.
type kind string

const (
	// deliberate differences stay: OllamaMax fixes an Ollama quirk, or
	// answers a route itself by design, or the simulator cannot do what a
	// model file does. The case passes, checking status and contains where
	// they are set.
	deliberate kind = "deliberate"
	// missing differences are routes or behaviour not implemented yet: the
	// case skips, saying what is missing, until it is.
	missing kind = "not yet implemented"
	// toFix differences are defects found by this suite: the case skips
	// with the reason until they are fixed.
	toFix kind = "to fix"
)

// A difference is a set of cases on one target that do not answer as real
// Ollama does, and why. A listed case that answers as real Ollama does
// fails the suite: take it out of its entry.
type difference struct {
	target string
	kind   kind
	reason string
	// For deliberate differences: the status the target answers (0: not
	// checked) and a substring of its body ("": not checked).
	status   int
	contains string
	cases    []string
}

// The names of the /v1/messages and /v1/responses cases.
var (
	messagesCases = []string{"messages", "messages stream", "messages system blocks", "messages tools",
		"messages bad json", "messages missing model", "messages unknown model", "messages missing max tokens",
		"messages empty", "messages thinking on a model without", "messages bad stream type"}
	responsesCases = []string{"responses", "responses stream", "responses input items", "responses tools",
		"responses bad json", "responses missing model", "responses unknown model", "responses bad input type"}
)

var known = []difference{
	// The dispatcher, in front of a worker in front of the real Ollama.
	{target: dispatcher, kind: deliberate, status: 400, contains: `"error":"model is required"`,
		reason: "the dispatcher needs a model to queue a job: a request without one is 400 model is required on every route, as Ollama's /api/chat answers (Ollama: 404 model '' not found on /api/generate and /api/embed)",
		cases:  []string{"generate missing model", "embed missing model"}},
	{target: dispatcher, kind: deliberate, status: 400, contains: `"message":"model is required","type":"invalid_request_error"`,
		reason: "the dispatcher needs a model to queue a job: a /v1 request without one is 400 model is required typed invalid_request_error, as Ollama's /v1/chat/completions answers (Ollama: 404 model '' not found, not_found_error, on /v1/completions and /v1/embeddings)",
		cases:  []string{"openai completions missing model", "openai embeddings missing model"}},
	{target: dispatcher, kind: deliberate, status: 501, contains: "not supported by OllamaMax",
		reason: "a fleet cannot create, push or upload models on one machine's Ollama: refused with 501 and the reason (docs/api.md)",
		cases:  []string{"create", "push"}},
	{target: dispatcher, kind: deliberate, status: 501,
		reason: "blobs are local to one Ollama: refused with 501 (docs/api.md)",
		cases:  []string{"blob head"}},
	{target: dispatcher, kind: deliberate, status: 200,
		reason: "a setting of the test: the fleet's dispatcher runs without LoopbackOnly, which cmd/dispatcher turns on for a loopback --listen (pkg/dispatcher's tests cover the guard)",
		cases:  []string{"foreign host"}},

	// The simulator, internal/ollamasim, which answers as Ollama 0.32.15 does.
	{target: sim, kind: deliberate,
		reason: "the simulator calls an offered tool; the tiny model's random text never parses as a tool call",
		cases:  []string{"chat tools", "openai chat tools", "messages tools", "responses tools"}},
	{target: sim, kind: deliberate, contains: "pull model manifest: file does not exist",
		reason: "the simulator has no network: its registry fails a name with \"missing\" in its own words (real Ollama: a refused connection to 127.0.0.1:1)",
		cases:  []string{"pull unreachable", "pull unreachable no stream"}},
	{target: sim, kind: deliberate, contains: `"disabled":false`,
		reason: "the simulator stands for an Ollama with the cloud on and no network (internal/ollamasim cloud.go); the suite's real Ollama runs with OLLAMA_NO_CLOUD=1",
		cases:  []string{"status"}},
	{target: sim, kind: deliberate, status: 502, contains: "ollama.com",
		reason: "the simulator stands for an Ollama with the cloud on and no network: web search and fetch fail to reach ollama.com (real Ollama, with OLLAMA_NO_CLOUD=1: 403 ollama cloud is disabled)",
		cases:  []string{"web search", "web fetch"}},
	{target: sim, kind: deliberate,
		reason: "the simulator has no CORS and no Host guard (no OPTIONS route either): OllamaMax's workers never send it an Origin or a foreign Host",
		cases:  []string{"cors preflight", "cors preflight foreign origin", "cors local origin", "cors extension origin", "cors foreign origin", "foreign host"}},
	{target: sim, kind: deliberate, status: 404,
		reason: "OllamaMax never sends /api/create, /api/push or /api/blobs to an Ollama: the simulator does not serve them",
		cases:  []string{"create", "push", "blob head"}},
}

func lookup(target, caseName string) (difference, bool) {
	for _, k := range known {
		if k.target != target {
			continue
		}
		for _, c := range k.cases {
			if c == caseName {
				return k, true
			}
		}
	}
	return difference{}, false
}
