package ollamasim_test

import (
	"bytes"
	"net/http"
	"regexp"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// TestCloudOffline checks what Ollama forwards to ollama.com, answered as
// real Ollama 0.32.15 answered it on a machine without internet, not signed
// in: 502 and Go's dial error, e.g. for a chat with gpt-oss:20b:cloud
//
//	{"error":"Post \"https://ollama.com:443/api/chat?ts=1796137365\": dial tcp: lookup ollama.com on 10.255.255.53:53: no such host"}
//
// (the simulator names no DNS server), in the native shape on every route,
// /v1 included, since Ollama's cloud passthrough answers before the
// compatibility layer.
func TestCloudOffline(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	const user = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, method, path, body string
		wantTarget               string // method and URL in the error, before ?ts=
	}{
		{"chat", "POST", "/api/chat", `{"model":"gpt-oss:20b:cloud",` + user + `}`, `Post "https://ollama.com:443/api/chat`},
		{"chat legacy tag", "POST", "/api/chat", `{"model":"gpt-oss:20b-cloud",` + user + `}`, `Post "https://ollama.com:443/api/chat`},
		{"generate", "POST", "/api/generate", `{"model":"gpt-oss:cloud","prompt":"hi"}`, `Post "https://ollama.com:443/api/generate`},
		{"embed", "POST", "/api/embed", `{"model":"embed:cloud","input":"x"}`, `Post "https://ollama.com:443/api/embed`},
		{"embeddings", "POST", "/api/embeddings", `{"model":"embed:cloud","prompt":"x"}`, `Post "https://ollama.com:443/api/embeddings`},
		{"show", "POST", "/api/show", `{"model":"gpt-oss:cloud"}`, `Post "https://ollama.com:443/api/show`},
		{"openai chat", "POST", "/v1/chat/completions", `{"model":"gpt-oss:20b-cloud",` + user + `}`, `Post "https://ollama.com:443/v1/chat/completions`},
		{"openai completions", "POST", "/v1/completions", `{"model":"gpt-oss:cloud","prompt":"x"}`, `Post "https://ollama.com:443/v1/completions`},
		{"openai embeddings", "POST", "/v1/embeddings", `{"model":"e:cloud","input":"x"}`, `Post "https://ollama.com:443/v1/embeddings`},
		{"openai model", "GET", "/v1/models/gpt-oss:cloud", ``, `Get "https://ollama.com:443/v1/models/gpt-oss`},
		{"responses", "POST", "/v1/responses", `{"model":"gpt-oss:cloud","input":"hi"}`, `Post "https://ollama.com:443/v1/responses`},
		{"messages", "POST", "/v1/messages", `{"model":"gpt-oss:cloud","max_tokens":5,` + user + `}`, `Post "https://ollama.com:443/v1/messages`},
		{"web search", "POST", "/api/experimental/web_search", `{"query":"hi"}`, `Post "https://ollama.com:443/api/web_search`},
		{"web fetch", "POST", "/api/experimental/web_fetch", `{"url":"https://example.com"}`, `Post "https://ollama.com:443/api/web_fetch`},
		{"web search not json", "POST", "/api/experimental/web_search", `xx`, `Post "https://ollama.com:443/api/web_search`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, tt.method, tt.path, tt.body)
			want := regexp.MustCompile(`^\{"error":"` + regexp.QuoteMeta(jsonQuote(tt.wantTarget)) + `\?ts=\d+\\": dial tcp: lookup ollama\.com: no such host"\}$`)
			if r.status != http.StatusBadGateway || r.contentType != jsonUTF8 || !want.MatchString(r.body) {
				t.Errorf("got %d %q %s, want 502 %s %s", r.status, r.contentType, r.body, jsonUTF8, want)
			}
		})
	}
	t.Run("query kept", func(t *testing.T) {
		r := do(t, base, "POST", "/api/chat?x=1", `{"model":"m:cloud",`+user+`}`)
		if !regexp.MustCompile(`/api/chat\?ts=\d+\\u0026x=1\\"`).MatchString(r.body) {
			t.Errorf("body %s, want the query with ts added, as Ollama signs it", r.body)
		}
	})
}

// jsonQuote is s as it reads inside a JSON string.
func jsonQuote(s string) string {
	var b bytes.Buffer
	for _, c := range s {
		if c == '"' {
			b.WriteString(`\"`)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func TestModelRecommendations(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	r := do(t, base, "GET", "/api/experimental/model-recommendations", "")
	// Real Ollama 0.32.15 without internet, byte for byte.
	const want = `{"recommendations":[{"model":"kimi-k2.6:cloud","description":"State-of-the-art coding, long-horizon execution, and multimodal agent swarm capability","context_length":262144,"max_output_tokens":262144},{"model":"glm-5.1:cloud","description":"Reasoning and code generation","context_length":202752,"max_output_tokens":131072},{"model":"qwen3.5:cloud","description":"Reasoning, coding, and agentic tool use with vision","context_length":262144,"max_output_tokens":32768},{"model":"minimax-m2.7:cloud","description":"Fast, efficient coding and real-world productivity","context_length":204800,"max_output_tokens":128000},{"model":"gemma4","description":"Reasoning and code generation locally","vram_bytes":12000000000},{"model":"qwen3.5","description":"Reasoning, coding, and visual understanding locally","vram_bytes":14000000000}]}`
	if r.status != 200 || r.contentType != jsonUTF8 || r.body != want {
		t.Errorf("got %d %q %s\nwant 200 %s %s", r.status, r.contentType, r.body, jsonUTF8, want)
	}
	if r := do(t, base, "POST", "/api/experimental/model-recommendations", "{}"); r.status != 405 || r.header.Get("Allow") != "GET" {
		t.Errorf("POST got %d Allow %q, want 405 Allow GET", r.status, r.header.Get("Allow"))
	}
}

// TestZstdBodies checks that the POST /v1 routes take zstd-encoded bodies,
// as Ollama 0.32.15 took them on each, and that the native routes do not
// (real Ollama: 400 "invalid character '(' looking for beginning of value").
func TestZstdBodies(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	compress := func(s string) string {
		var b bytes.Buffer
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	const user = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		path, body string
		wantStatus int
	}{
		{"/v1/chat/completions", `{"model":"llama3.2","max_tokens":2,` + user + `}`, 200},
		{"/v1/completions", `{"model":"llama3.2","max_tokens":2,"prompt":"hi"}`, 200},
		{"/v1/embeddings", `{"model":"nomic-embed-text","input":"hi"}`, 200},
		{"/v1/responses", `{"model":"llama3.2","max_output_tokens":2,"input":"hi"}`, 200},
		{"/v1/messages", `{"model":"llama3.2","max_tokens":2,` + user + `}`, 200},
		{"/api/chat", `{"model":"llama3.2",` + user + `}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := do(t, base, "POST", tt.path, compress(tt.body), "Content-Encoding", "zstd")
			if r.status != tt.wantStatus {
				t.Errorf("status %d, body %q; want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantStatus == 400 && r.body != `{"error":"invalid character '(' looking for beginning of value"}` {
				t.Errorf("body %s, want the decoder's error on the zstd magic number", r.body)
			}
		})
	}
}
