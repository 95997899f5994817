package realollama_test

import (
	"net/http/httptest"
	"testing"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// A tc is one request, sent to real Ollama and to each target.
type tc struct {
	name, method, path string
	// body is the request body; $T in it becomes the target's name
	// ("real", "sim", "dispatcher"), for requests that change models.
	body string
	// status is what real Ollama answers: a check that the case tests what
	// its name says.
	status int
	// eventual marks listings the dispatcher answers from the workers'
	// records, which follow a change within moments.
	eventual bool
	// header is added to the request ("Host" sets its Host).
	header map[string]string
	// simDrop are top-level keys left out of the comparison with the
	// simulator: what describes a model file, which it does not have.
	simDrop []string
}

// modelFile is what /api/show says of a model's file: the simulator has
// none, and describes a made-up llama instead (without its tensors).
var modelFile = []string{"model_info", "license", "tensors"}

func serveSim(t *testing.T, cfg ollamasim.Config) string {
	t.Helper()
	hs := httptest.NewServer(ollamasim.New(cfg))
	t.Cleanup(hs.Close)
	return hs.URL
}

// Generation requests bound their answers (num_predict, max_tokens) on
// tiny-long, which never stops before: the finish reason is always
// "length", and a short answer is never cut by Ollama's repeated-token
// guard (31 in a row).
var cases = []tc{
	// Routing: the root, unknown, removed and wrong-method routes, a trailing slash.
	{name: "root", method: "GET", path: "/", status: 200},
	{name: "root head", method: "HEAD", path: "/", status: 200},
	{name: "unknown route", method: "GET", path: "/api/nope", status: 404},
	{name: "unknown v1 route", method: "POST", path: "/v1/nope", body: `{}`, status: 404},
	{name: "removed aliases", method: "GET", path: "/api/experimental/aliases", status: 404},
	{name: "removed images generations", method: "POST", path: "/v1/images/generations", body: `{"model":"tiny","prompt":"x"}`, status: 404},
	{name: "generate by GET", method: "GET", path: "/api/generate", status: 405},
	{name: "chat by GET", method: "GET", path: "/api/chat", status: 405},
	{name: "tags by POST", method: "POST", path: "/api/tags", body: `{}`, status: 405},
	{name: "delete by POST", method: "POST", path: "/api/delete", body: `{"model":"tiny"}`, status: 405},
	{name: "chat completions by GET", method: "GET", path: "/v1/chat/completions", status: 405},
	{name: "messages by GET", method: "GET", path: "/v1/messages", status: 405},
	{name: "tags trailing slash", method: "GET", path: "/api/tags/", status: 301},
	{name: "generate trailing slash", method: "POST", path: "/api/generate/", body: `{"model":"tiny"}`, status: 307},

	// Browsers and the Host header: Ollama's CORS defaults and its guard
	// against DNS rebinding on a loopback listener.
	{name: "cors preflight", method: "OPTIONS", path: "/api/chat", status: 204,
		header: map[string]string{"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}},
	{name: "cors preflight foreign origin", method: "OPTIONS", path: "/api/chat", status: 403,
		header: map[string]string{"Origin": "http://example.com", "Access-Control-Request-Method": "POST"}},
	{name: "cors local origin", method: "GET", path: "/api/version", status: 200, header: map[string]string{"Origin": "http://127.0.0.1:8080"}},
	{name: "cors extension origin", method: "POST", path: "/api/show", body: `{"model":"tiny"}`, status: 403,
		header: map[string]string{"Origin": "chrome-extension://abcdef"}, simDrop: modelFile},
	{name: "cors foreign origin", method: "GET", path: "/api/version", status: 403, header: map[string]string{"Origin": "http://example.com"}},
	{name: "foreign host", method: "GET", path: "/api/version", status: 403, header: map[string]string{"Host": "example.com"}},
	{name: "local host name", method: "GET", path: "/api/version", status: 200, header: map[string]string{"Host": "localhost:11434"}},

	// Listings and metadata, before anything is loaded or copied.
	{name: "version", method: "GET", path: "/api/version", status: 200},
	{name: "version head", method: "HEAD", path: "/api/version", status: 200},
	{name: "tags", method: "GET", path: "/api/tags", status: 200},
	{name: "tags head", method: "HEAD", path: "/api/tags", status: 200},
	{name: "status", method: "GET", path: "/api/status", status: 200},
	{name: "v1 models", method: "GET", path: "/v1/models", status: 200},
	{name: "v1 model", method: "GET", path: "/v1/models/tiny", status: 200},
	{name: "v1 model tagged", method: "GET", path: "/v1/models/tiny:latest", status: 200},
	{name: "v1 model unknown", method: "GET", path: "/v1/models/nope", status: 404},
	{name: "v1 model invalid name", method: "GET", path: "/v1/models/a%20b", status: 400},
	{name: "show", method: "POST", path: "/api/show", body: `{"model":"tiny"}`, status: 200, simDrop: modelFile},
	{name: "show by name", method: "POST", path: "/api/show", body: `{"name":"tiny:latest"}`, status: 200, simDrop: modelFile},
	{name: "show embedding model", method: "POST", path: "/api/show", body: `{"model":"tiny-embed"}`, status: 200, simDrop: append([]string{"parameters"}, modelFile...)},
	{name: "show verbose", method: "POST", path: "/api/show", body: `{"model":"tiny","verbose":true}`, status: 200, simDrop: modelFile},
	{name: "show missing model", method: "POST", path: "/api/show", body: `{}`, status: 400},
	{name: "show unknown model", method: "POST", path: "/api/show", body: `{"model":"nope"}`, status: 404},
	{name: "show unknown tag of a model", method: "POST", path: "/api/show", body: `{"model":"TINY:foo"}`, status: 404},
	{name: "show invalid model name", method: "POST", path: "/api/show", body: `{"model":"a b"}`, status: 400},
	{name: "show bad json", method: "POST", path: "/api/show", body: `{"model":`, status: 400},

	// /api/generate
	{name: "generate stream", method: "POST", path: "/api/generate", body: `{"model":"tiny-long","prompt":"Why is the sky blue?","options":{"num_predict":8,"seed":1}}`, status: 200},
	{name: "generate no stream", method: "POST", path: "/api/generate", body: `{"model":"tiny-long","prompt":"hi","stream":false,"options":{"num_predict":8,"seed":1}}`, status: 200},
	{name: "generate raw", method: "POST", path: "/api/generate", body: `{"model":"tiny-long","prompt":"user: hi\nassistant:","raw":true,"stream":false,"options":{"num_predict":4,"seed":1}}`, status: 200},
	{name: "generate system", method: "POST", path: "/api/generate", body: `{"model":"tiny-long","prompt":"hi","system":"be brief","stream":false,"options":{"num_predict":4,"seed":1}}`, status: 200},
	{name: "generate json format", method: "POST", path: "/api/generate", body: `{"model":"tiny-long","prompt":"hi","format":"json","stream":false,"options":{"num_predict":4,"seed":1}}`, status: 200},
	{name: "generate load", method: "POST", path: "/api/generate", body: `{"model":"tiny"}`, status: 200},
	{name: "generate bad json", method: "POST", path: "/api/generate", body: `{"model":`, status: 400},
	{name: "generate empty body", method: "POST", path: "/api/generate", body: ``, status: 400},
	{name: "generate wrong type", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":5}`, status: 400},
	{name: "generate bad stream type", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","stream":"yes"}`, status: 400},
	{name: "generate unknown model", method: "POST", path: "/api/generate", body: `{"model":"nope","prompt":"x"}`, status: 404},
	{name: "generate missing model", method: "POST", path: "/api/generate", body: `{"prompt":"x"}`, status: 404},
	{name: "generate invalid model name", method: "POST", path: "/api/generate", body: `{"model":"a b","prompt":"x"}`, status: 400},
	{name: "generate two sources", method: "POST", path: "/api/generate", body: `{"model":"tiny:local:cloud","prompt":"x"}`, status: 400},
	{name: "generate think unsupported", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","think":true}`, status: 400},
	{name: "generate think level", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","think":"high"}`, status: 400},
	{name: "generate bad think", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","think":"very"}`, status: 400},
	{name: "generate bad option type", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","options":{"temperature":"hot"}}`, status: 500},
	{name: "generate bad format", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","format":"yaml"}`, status: 500},
	{name: "generate suffix unsupported", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","suffix":"y"}`, status: 400},
	{name: "generate raw with template", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","raw":true,"template":"{{ .Prompt }}"}`, status: 400},
	{name: "generate top logprobs", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","logprobs":true,"top_logprobs":21}`, status: 400},
	{name: "generate on embedding model", method: "POST", path: "/api/generate", body: `{"model":"tiny-embed","prompt":"x"}`, status: 400},
	{name: "generate bad image", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","images":["not base64!"]}`, status: 400},
	{name: "generate bad keep alive", method: "POST", path: "/api/generate", body: `{"model":"tiny","prompt":"x","keep_alive":"soon"}`, status: 400},
	{name: "generate stream unknown model", method: "POST", path: "/api/generate", body: `{"model":"nope","prompt":"x","stream":true}`, status: 404},

	// /api/chat
	{name: "chat stream", method: "POST", path: "/api/chat", body: `{"model":"tiny-long","messages":[{"role":"user","content":"Hello"}],"options":{"num_predict":8,"seed":1}}`, status: 200},
	{name: "chat no stream", method: "POST", path: "/api/chat", body: `{"model":"TINY-LONG:latest","messages":[{"role":"user","content":"Hello"}],"stream":false,"options":{"num_predict":8,"seed":1}}`, status: 200},
	{name: "chat system and history", method: "POST", path: "/api/chat", body: `{"model":"tiny-long","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"stream":false,"options":{"num_predict":4,"seed":1}}`, status: 200},
	{name: "chat continue assistant", method: "POST", path: "/api/chat", body: `{"model":"tiny-long","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"stream":false,"options":{"num_predict":4,"seed":1}}`, status: 200},
	{name: "chat load", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[]}`, status: 200},
	{name: "chat tools", method: "POST", path: "/api/chat", body: `{"model":"tiny-tools","messages":[{"role":"user","content":"weather in Paris?"}],"stream":false,"options":{"num_predict":4,"seed":1},"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}`, status: 200},
	{name: "chat tools unsupported", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`, status: 400},
	{name: "chat missing model", method: "POST", path: "/api/chat", body: `{"messages":[]}`, status: 400},
	{name: "chat unknown model", method: "POST", path: "/api/chat", body: `{"model":"nope","messages":[]}`, status: 404},
	{name: "chat bad json", method: "POST", path: "/api/chat", body: `{"model":"tiny",`, status: 400},
	{name: "chat wrong type", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":"hi"}`, status: 400},
	{name: "chat bad stream type", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[],"stream":1}`, status: 400},
	{name: "chat think unsupported", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"think":true}`, status: 400},
	{name: "chat bad think", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"think":5}`, status: 400},
	{name: "chat on embedding model", method: "POST", path: "/api/chat", body: `{"model":"tiny-embed","messages":[{"role":"user","content":"x"}]}`, status: 400},
	{name: "chat bad option type", method: "POST", path: "/api/chat", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"options":{"num_predict":"many"}}`, status: 500},

	// /api/embed and /api/embeddings
	{name: "embed", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":["a","b"]}`, status: 200},
	{name: "embed string", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":"a"}`, status: 200},
	{name: "embed dimensions", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":"a","dimensions":4}`, status: 200},
	{name: "embed more dimensions than the model's", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":"a","dimensions":65}`, status: 200},
	{name: "embed empty list", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":[]}`, status: 200},
	{name: "embed bad input", method: "POST", path: "/api/embed", body: `{"model":"tiny-embed","input":5}`, status: 400},
	{name: "embed unknown model", method: "POST", path: "/api/embed", body: `{"model":"nope","input":"a"}`, status: 404},
	{name: "embed missing model", method: "POST", path: "/api/embed", body: `{"input":"a"}`, status: 404},
	{name: "embed on chat model", method: "POST", path: "/api/embed", body: `{"model":"tiny","input":"a"}`, status: 501},
	{name: "embed bad json", method: "POST", path: "/api/embed", body: `[`, status: 400},
	{name: "embeddings legacy", method: "POST", path: "/api/embeddings", body: `{"model":"tiny-embed","prompt":"a"}`, status: 200},
	{name: "embeddings empty prompt", method: "POST", path: "/api/embeddings", body: `{"model":"tiny-embed","prompt":""}`, status: 200},
	{name: "embeddings missing model", method: "POST", path: "/api/embeddings", body: `{"prompt":"a"}`, status: 400},
	{name: "embeddings unknown model", method: "POST", path: "/api/embeddings", body: `{"model":"nope","prompt":"a"}`, status: 404},

	// /v1/chat/completions
	{name: "openai chat", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny-long","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"seed":1}`, status: 200},
	{name: "openai chat stream", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny-long","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":8,"seed":1}`, status: 200},
	{name: "openai chat stream usage", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny-long","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":8,"seed":1}`, status: 200},
	{name: "openai chat tools", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny-tools","messages":[{"role":"user","content":"weather?"}],"max_tokens":4,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}`, status: 200},
	{name: "openai chat json", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny-long","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"seed":1,"response_format":{"type":"json_object"}}`, status: 200},
	{name: "openai chat bad json", method: "POST", path: "/v1/chat/completions", body: `{"model":`, status: 400},
	{name: "openai chat no messages", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":[]}`, status: 400},
	{name: "openai chat unknown model", method: "POST", path: "/v1/chat/completions", body: `{"model":"nope","messages":[{"role":"user","content":"Hi"}]}`, status: 404},
	{name: "openai chat missing model", method: "POST", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"Hi"}]}`, status: 400},
	{name: "openai chat invalid model name", method: "POST", path: "/v1/chat/completions", body: `{"model":"a b","messages":[{"role":"user","content":"Hi"}]}`, status: 400},
	{name: "openai chat bad stream type", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"stream":"yes"}`, status: 400},
	{name: "openai chat wrong type", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":"Hi"}`, status: 400},
	{name: "openai chat tools unsupported", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`, status: 400},
	{name: "openai chat stream unknown model", method: "POST", path: "/v1/chat/completions", body: `{"model":"nope","stream":true,"messages":[{"role":"user","content":"Hi"}]}`, status: 404},
	{name: "openai chat bad reasoning effort", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}`, status: 400},

	// /v1/completions
	{name: "openai completions", method: "POST", path: "/v1/completions", body: `{"model":"tiny-long","prompt":"Once upon","max_tokens":8,"seed":1}`, status: 200},
	{name: "openai completions stream", method: "POST", path: "/v1/completions", body: `{"model":"tiny-long","prompt":"Once upon","stream":true,"max_tokens":8,"seed":1}`, status: 200},
	{name: "openai completions bad prompt", method: "POST", path: "/v1/completions", body: `{"model":"tiny","prompt":["a"]}`, status: 400},
	{name: "openai completions unknown model", method: "POST", path: "/v1/completions", body: `{"model":"nope","prompt":"a"}`, status: 404},
	{name: "openai completions missing model", method: "POST", path: "/v1/completions", body: `{"prompt":"a"}`, status: 404},

	// /v1/embeddings
	{name: "openai embeddings", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny-embed","input":["a","b"]}`, status: 200},
	{name: "openai embeddings base64", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny-embed","input":"a","encoding_format":"base64"}`, status: 200},
	{name: "openai embeddings dimensions", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny-embed","input":"a","dimensions":8}`, status: 200},
	{name: "openai embeddings bad format", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny-embed","input":"a","encoding_format":"hex"}`, status: 400},
	{name: "openai embeddings no input", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny-embed","input":[]}`, status: 400},
	{name: "openai embeddings unknown model", method: "POST", path: "/v1/embeddings", body: `{"model":"nope","input":"a"}`, status: 404},
	{name: "openai embeddings missing model", method: "POST", path: "/v1/embeddings", body: `{"input":"a"}`, status: 404},
	{name: "openai embeddings invalid model name", method: "POST", path: "/v1/embeddings", body: `{"model":"a b","input":"a"}`, status: 400},

	// /v1/messages (Anthropic)
	{name: "messages", method: "POST", path: "/v1/messages", body: `{"model":"tiny-long","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`, status: 200},
	{name: "messages stream", method: "POST", path: "/v1/messages", body: `{"model":"tiny-long","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, status: 200},
	{name: "messages system blocks", method: "POST", path: "/v1/messages", body: `{"model":"tiny-long","max_tokens":4,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`, status: 200},
	{name: "messages tools", method: "POST", path: "/v1/messages", body: `{"model":"tiny-tools","max_tokens":4,"messages":[{"role":"user","content":"weather?"}],"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}`, status: 200},
	{name: "messages bad json", method: "POST", path: "/v1/messages", body: `{"model":`, status: 400},
	{name: "messages missing model", method: "POST", path: "/v1/messages", body: `{"max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`, status: 400},
	{name: "messages unknown model", method: "POST", path: "/v1/messages", body: `{"model":"nope","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`, status: 404},
	{name: "messages missing max tokens", method: "POST", path: "/v1/messages", body: `{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}`, status: 400},
	{name: "messages empty", method: "POST", path: "/v1/messages", body: `{"model":"tiny","max_tokens":8,"messages":[]}`, status: 400},
	{name: "messages thinking on a model without", method: "POST", path: "/v1/messages", body: `{"model":"tiny-long","max_tokens":8,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Hi"}]}`, status: 200},
	{name: "messages bad stream type", method: "POST", path: "/v1/messages", body: `{"model":"tiny","max_tokens":8,"stream":"yes","messages":[{"role":"user","content":"Hi"}]}`, status: 400},

	// /v1/responses
	{name: "responses", method: "POST", path: "/v1/responses", body: `{"model":"tiny-long","input":"Hi","max_output_tokens":8}`, status: 200},
	{name: "responses stream", method: "POST", path: "/v1/responses", body: `{"model":"tiny-long","input":"Hi","max_output_tokens":8,"stream":true}`, status: 200},
	{name: "responses input items", method: "POST", path: "/v1/responses", body: `{"model":"tiny-long","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"}]}],"max_output_tokens":4}`, status: 200},
	{name: "responses tools", method: "POST", path: "/v1/responses", body: `{"model":"tiny-tools","input":"weather?","max_output_tokens":4,"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}`, status: 200},
	{name: "responses bad json", method: "POST", path: "/v1/responses", body: `{"model":`, status: 400},
	{name: "responses missing model", method: "POST", path: "/v1/responses", body: `{"input":"Hi"}`, status: 400},
	{name: "responses unknown model", method: "POST", path: "/v1/responses", body: `{"model":"nope","input":"Hi"}`, status: 404},
	{name: "responses bad input type", method: "POST", path: "/v1/responses", body: `{"model":"tiny","input":5}`, status: 400},

	// /v1/audio/transcriptions: a multipart form.
	{name: "transcriptions not multipart", method: "POST", path: "/v1/audio/transcriptions", body: `{"model":"tiny"}`, status: 400},
	{name: "transcriptions on a text model", method: "POST", path: "/v1/audio/transcriptions", status: 400,
		header: map[string]string{"Content-Type": "multipart/form-data; boundary=b"},
		body:   "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntiny\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n"},

	// The experimental node routes; the cloud is off (OLLAMA_NO_CLOUD=1).
	{name: "web search", method: "POST", path: "/api/experimental/web_search", body: `{"query":"x"}`, status: 403},
	{name: "web fetch", method: "POST", path: "/api/experimental/web_fetch", body: `{"url":"http://127.0.0.1:1/"}`, status: 403},
	{name: "model recommendations", method: "GET", path: "/api/experimental/model-recommendations", status: 200},

	// What is loaded now: the dispatcher's listing follows the worker's record.
	{name: "ps", method: "GET", path: "/api/ps", status: 200, eventual: true},

	// Model management: pull (no registry here: a closed port on loopback;
	// "missing" makes the simulator's registry fail too), copy, delete.
	{name: "pull unreachable", method: "POST", path: "/api/pull", body: `{"model":"127.0.0.1:1/library/missing"}`, status: 200},
	{name: "pull unreachable no stream", method: "POST", path: "/api/pull", body: `{"model":"127.0.0.1:1/library/missing","stream":false}`, status: 500},
	{name: "pull invalid name", method: "POST", path: "/api/pull", body: `{"model":"a b"}`, status: 400},
	{name: "pull missing model", method: "POST", path: "/api/pull", body: `{}`, status: 400},
	{name: "pull bad json", method: "POST", path: "/api/pull", body: `{"model":`, status: 400},
	{name: "copy", method: "POST", path: "/api/copy", body: `{"source":"tiny","destination":"tiny-copy-$T"}`, status: 200},
	{name: "copy unknown source", method: "POST", path: "/api/copy", body: `{"source":"nope","destination":"x"}`, status: 404},
	{name: "copy invalid destination", method: "POST", path: "/api/copy", body: `{"source":"tiny","destination":"a b"}`, status: 400},
	{name: "copy missing fields", method: "POST", path: "/api/copy", body: `{}`, status: 400},
	{name: "delete", method: "DELETE", path: "/api/delete", body: `{"model":"tiny-copy-$T"}`, status: 200},
	{name: "delete again", method: "DELETE", path: "/api/delete", body: `{"model":"tiny-copy-$T"}`, status: 404},
	{name: "delete unknown", method: "DELETE", path: "/api/delete", body: `{"model":"nope"}`, status: 404},
	{name: "delete invalid name", method: "DELETE", path: "/api/delete", body: `{"model":"a b"}`, status: 400},
	{name: "delete missing model", method: "DELETE", path: "/api/delete", body: `{}`, status: 400},

	// Routes OllamaMax refuses, with input real Ollama rejects (so that it creates nothing).
	{name: "create", method: "POST", path: "/api/create", body: `{"model":"x"}`, status: 400},
	{name: "push", method: "POST", path: "/api/push", body: `{"model":"127.0.0.1:1/library/tiny"}`, status: 200},
	{name: "blob head", method: "HEAD", path: "/api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", status: 404},

	// Unloading last: it changes what /api/ps lists.
	{name: "generate unload", method: "POST", path: "/api/generate", body: `{"model":"tiny","keep_alive":0}`, status: 200},
	{name: "chat unload", method: "POST", path: "/api/chat", body: `{"model":"tiny-long","messages":[],"keep_alive":0}`, status: 200},
}
