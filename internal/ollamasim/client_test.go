package ollamasim_test

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// generated is what one generate or chat call returned through the client.
type generated struct {
	chunks   int
	text     string
	thinking string
	final    api.Metrics
	reason   string
	done     bool
	context  []int
	calls    []api.ToolCall
}

func runGenerate(t *testing.T, c *api.Client, req api.GenerateRequest) generated {
	t.Helper()
	var g generated
	err := c.Generate(t.Context(), &req, func(r api.GenerateResponse) error {
		g.chunks++
		g.text += r.Response
		g.thinking += r.Thinking
		if r.Done {
			g.done, g.reason, g.final, g.context = true, r.DoneReason, r.Metrics, r.Context
		}
		return nil
	})
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return g
}

func runChat(t *testing.T, c *api.Client, req api.ChatRequest) generated {
	t.Helper()
	var g generated
	err := c.Chat(t.Context(), &req, func(r api.ChatResponse) error {
		g.chunks++
		g.text += r.Message.Content
		g.thinking += r.Message.Thinking
		g.calls = append(g.calls, r.Message.ToolCalls...)
		if r.Done {
			g.done, g.reason, g.final = true, r.DoneReason, r.Metrics
		}
		return nil
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	return g
}

func checkMetrics(t *testing.T, m api.Metrics, wantEval int) {
	t.Helper()
	if m.TotalDuration <= 0 || m.LoadDuration <= 0 || m.PromptEvalDuration <= 0 || m.EvalDuration <= 0 {
		t.Errorf("durations = %+v, want all positive", m)
	}
	if m.PromptEvalCount <= 0 {
		t.Errorf("prompt_eval_count = %d, want > 0", m.PromptEvalCount)
	}
	if m.EvalCount != wantEval {
		t.Errorf("eval_count = %d, want %d", m.EvalCount, wantEval)
	}
	if m.TotalDuration < m.PromptEvalDuration+m.EvalDuration {
		t.Errorf("total_duration %v < prompt eval %v + eval %v", m.TotalDuration, m.PromptEvalDuration, m.EvalDuration)
	}
}

func TestGenerate(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name       string
		req        api.GenerateRequest
		wantChunks int
		wantTokens int
		wantReason string
		wantCtx    bool
	}{
		{"streaming", api.GenerateRequest{Model: "llama3.2", Prompt: "Why is the sky blue?"}, 25, 24, "stop", true},
		{"non-streaming", api.GenerateRequest{Model: "llama3.2", Prompt: "Why is the sky blue?", Stream: ptr(false)}, 1, 24, "stop", true},
		{"num_predict cuts with length", api.GenerateRequest{Model: "llama3.2", Prompt: "Count", Options: map[string]any{"num_predict": 5}}, 6, 5, "length", true},
		{"raw omits context", api.GenerateRequest{Model: "llama3.2", Prompt: "<s>hi", Raw: true}, 25, 24, "stop", false},
		{"case-insensitive name with tag", api.GenerateRequest{Model: "LLAMA3.2:Latest", Prompt: "hi"}, 25, 24, "stop", true},
		{"suffix on insert model", api.GenerateRequest{Model: "llama3.2", Prompt: "func add(", Suffix: "}"}, 25, 24, "stop", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := runGenerate(t, c, tt.req)
			if g.chunks != tt.wantChunks {
				t.Errorf("chunks = %d, want %d", g.chunks, tt.wantChunks)
			}
			if !g.done || g.reason != tt.wantReason {
				t.Errorf("done = %v, done_reason = %q, want true, %q", g.done, g.reason, tt.wantReason)
			}
			if got := len(strings.Fields(g.text)); got != tt.wantTokens {
				t.Errorf("response has %d words, want %d: %q", got, tt.wantTokens, g.text)
			}
			checkMetrics(t, g.final, tt.wantTokens)
			if got := len(g.context) > 0; got != tt.wantCtx {
				t.Errorf("context present = %v, want %v", got, tt.wantCtx)
			}
		})
	}
}

func TestChat(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	msgs := []api.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello there"}}
	weather := api.Tool{Type: "function", Function: api.ToolFunction{
		Name: "get_weather",
		Parameters: api.ToolFunctionParameters{
			Type: "object", Required: []string{"city"}, Properties: api.NewToolPropertiesMap(),
		},
	}}
	weather.Function.Parameters.Properties.Set("city", api.ToolProperty{Type: api.PropertyType{"string"}})

	tests := []struct {
		name         string
		req          api.ChatRequest
		wantChunks   int
		wantWords    int
		wantThinking bool
		wantCalls    int
		wantReason   string
	}{
		{"streaming", api.ChatRequest{Model: "llama3.2", Messages: msgs}, 25, 24, false, 0, "stop"},
		{"non-streaming", api.ChatRequest{Model: "llama3.2", Messages: msgs, Stream: ptr(false)}, 1, 24, false, 0, "stop"},
		{"num_predict", api.ChatRequest{Model: "llama3.2", Messages: msgs, Options: map[string]any{"num_predict": 3}}, 4, 3, false, 0, "length"},
		{"thinking model thinks by default", api.ChatRequest{Model: "qwen3:8b", Messages: msgs}, 25, 16, true, 0, "stop"},
		{"thinking off", api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Think: &api.ThinkValue{Value: false}}, 25, 24, false, 0, "stop"},
		{"tools get a tool call", api.ChatRequest{Model: "llama3.2", Messages: msgs, Tools: api.Tools{weather}}, 2, 0, false, 1, "stop"},
		{"tools non-streaming", api.ChatRequest{Model: "llama3.2", Messages: msgs, Tools: api.Tools{weather}, Stream: ptr(false)}, 1, 0, false, 1, "stop"},
		{"tool result gets text", api.ChatRequest{Model: "llama3.2", Tools: api.Tools{weather}, Messages: append(slices.Clone(msgs),
			api.Message{Role: "assistant"}, api.Message{Role: "tool", Content: "sunny", ToolName: "get_weather"})}, 25, 24, false, 0, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := runChat(t, c, tt.req)
			if g.chunks != tt.wantChunks {
				t.Errorf("chunks = %d, want %d", g.chunks, tt.wantChunks)
			}
			if !g.done || g.reason != tt.wantReason {
				t.Errorf("done = %v, done_reason = %q, want true, %q", g.done, g.reason, tt.wantReason)
			}
			if got := len(strings.Fields(g.text)); got != tt.wantWords {
				t.Errorf("content has %d words, want %d: %q", got, tt.wantWords, g.text)
			}
			if got := g.thinking != ""; got != tt.wantThinking {
				t.Errorf("thinking present = %v, want %v", got, tt.wantThinking)
			}
			if len(g.calls) != tt.wantCalls {
				t.Fatalf("tool calls = %d, want %d", len(g.calls), tt.wantCalls)
			}
			for _, call := range g.calls {
				if call.Function.Name != "get_weather" || !strings.HasPrefix(call.ID, "call_") || len(call.ID) != 13 {
					t.Errorf("tool call = %+v, want get_weather with a call_xxxxxxxx id", call)
				}
				if _, ok := call.Function.Arguments.Get("city"); !ok {
					t.Errorf("tool call arguments = %s, want a city", call.Function.Arguments.String())
				}
			}
			if g.final.EvalCount == 0 || g.final.TotalDuration == 0 {
				t.Errorf("final metrics = %+v, want eval_count and total_duration", g.final)
			}
		})
	}
}

func TestDeterministicText(t *testing.T) {
	cfg := fastConfig()
	_, c1 := start(t, ollamasim.New(cfg))
	_, c2 := start(t, ollamasim.New(cfg))
	cfg.Seed++
	_, other := start(t, ollamasim.New(cfg))

	gen := api.GenerateRequest{Model: "llama3.2", Prompt: "Tell me a story"}
	chat := api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: "Tell me a story"}}}
	tests := []struct {
		name string
		run  func(*api.Client) string
	}{
		{"generate streaming", func(c *api.Client) string { return runGenerate(t, c, gen).text }},
		{"generate non-streaming", func(c *api.Client) string {
			r := gen
			r.Stream = ptr(false)
			return runGenerate(t, c, r).text
		}},
		{"chat streaming", func(c *api.Client) string { return runChat(t, c, chat).text }},
		{"chat non-streaming", func(c *api.Client) string {
			r := chat
			r.Stream = ptr(false)
			return runChat(t, c, r).text
		}},
	}
	var first []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, again := tt.run(c1), tt.run(c2), tt.run(c1)
			if a != b || a != again {
				t.Errorf("same request, same seed: got %q, %q and %q, want identical", a, b, again)
			}
			if o := tt.run(other); o == a {
				t.Errorf("different Config.Seed gave the same text %q", a)
			}
			first = append(first, a)
		})
	}
	if len(first) == 4 && (first[0] != first[1] || first[2] != first[3]) {
		t.Errorf("streaming and non-streaming text differ: %q", first)
	}

	t.Run("options.seed and prompt change the text", func(t *testing.T) {
		base := runGenerate(t, c1, gen).text
		seeded := gen
		seeded.Options = map[string]any{"seed": 7}
		if runGenerate(t, c1, seeded).text == base {
			t.Errorf("options.seed did not change the text")
		}
		prompted := gen
		prompted.Prompt += "!"
		if runGenerate(t, c1, prompted).text == base {
			t.Errorf("a different prompt did not change the text")
		}
	})
}

func TestStopSequence(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	req := api.GenerateRequest{Model: "llama3.2", Prompt: "stop test"}
	full := runGenerate(t, c, req).text
	words := strings.Fields(full)
	stop := words[3]
	req.Options = map[string]any{"stop": []any{stop}}
	g := runGenerate(t, c, req)
	want := full[:strings.Index(full, stop)]
	if g.text != want || g.reason != "stop" {
		t.Errorf("with stop %q: text %q, reason %q; want %q, stop", stop, g.text, g.reason, want)
	}
}

func TestListAndVersion(t *testing.T) {
	cfg := fastConfig()
	cfg.Version = "0.17.7"
	_, c := start(t, ollamasim.New(cfg))
	if err := c.Heartbeat(t.Context()); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	v, err := c.Version(t.Context())
	if err != nil || v != "0.17.7" {
		t.Errorf("version = %q, %v; want 0.17.7", v, err)
	}
	list, err := c.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var names []string
	for i, m := range list.Models {
		names = append(names, m.Name)
		if m.Model != m.Name || len(m.Digest) != 64 || m.Size <= 0 || m.Details.Format != "gguf" || len(m.Details.Families) != 1 {
			t.Errorf("models[%d] = %+v, want model == name, 64-hex digest, size, gguf details", i, m)
		}
		if i > 0 && m.ModifiedAt.After(list.Models[i-1].ModifiedAt) {
			t.Errorf("models not sorted newest first at %d", i)
		}
	}
	if want := []string{"llama3.2:latest", "nomic-embed-text:latest", "qwen3:8b"}; !slices.Equal(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
	if d := list.Models[1].Details; d.Family != "nomic-bert" || d.ParameterSize != "137M" || d.QuantizationLevel != "F16" {
		t.Errorf("embedding model details = %+v", d)
	}
}

// TestTagsShape checks the fields Ollama 0.32 added to /api/tags: the
// capabilities, and the trained context length and embedding length in the
// details, which /api/show and /api/ps do not repeat. Real Ollama 0.32.15
// listed its tiny model as
//
//	{"name":"tiny:latest",...,"details":{...,"context_length":4096,"embedding_length":64},"capabilities":["completion"]}
func TestTagsShape(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	r := do(t, base, "GET", "/api/tags", "")
	for _, want := range []string{
		`"details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M","context_length":131072},"capabilities":["completion","tools","insert"]}`,
		`"details":{"parent_model":"","format":"gguf","family":"nomic-bert","families":["nomic-bert"],"parameter_size":"137M","quantization_level":"F16","context_length":131072,"embedding_length":8},"capabilities":["embedding"]}`,
		`"context_length":131072},"capabilities":["completion","thinking"]}`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/api/tags = %s\nwant it to contain %s", r.body, want)
		}
	}
	for _, path := range []string{"/api/ps"} {
		if r := do(t, base, "GET", path, ""); strings.Contains(r.body, "context_length\":131072") || strings.Contains(r.body, "capabilities") {
			t.Errorf("%s = %s, want neither the trained context nor capabilities", path, r.body)
		}
	}
	r = do(t, base, "POST", "/api/show", `{"model":"nomic-embed-text"}`)
	if !strings.Contains(r.body, `"details":{"parent_model":"","format":"gguf","family":"nomic-bert","families":["nomic-bert"],"parameter_size":"137M","quantization_level":"F16"},`) {
		t.Errorf("/api/show = %s, want the details without lengths", r.body)
	}
}

// TestShowForCopilot checks that /api/show echoes the requested name as
// general.basename to GitHub Copilot Chat, as Ollama 0.32 does.
func TestShowForCopilot(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	for _, tt := range []struct{ agent, want string }{
		{"GitHubCopilotChat/0.30.0", "LLAMA3.2"},
		{"curl/8", "llama3.2"},
	} {
		r := do(t, base, "POST", "/api/show", `{"model":"LLAMA3.2"}`, "User-Agent", tt.agent)
		var show api.ShowResponse
		if err := json.Unmarshal([]byte(r.body), &show); err != nil || show.ModelInfo["general.basename"] != tt.want {
			t.Errorf("%s: general.basename = %v (%v), want %q", tt.agent, show.ModelInfo["general.basename"], err, tt.want)
		}
	}
}

func TestPsLoadAndUnload(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	running := func() map[string]api.ProcessModelResponse {
		t.Helper()
		ps, err := c.ListRunning(t.Context())
		if err != nil {
			t.Fatalf("ps: %v", err)
		}
		out := map[string]api.ProcessModelResponse{}
		for _, m := range ps.Models {
			out[m.Name] = m
		}
		return out
	}

	ps := running()
	m, ok := ps["llama3.2:latest"]
	if len(ps) != 1 || !ok {
		t.Fatalf("ps at start = %v, want only llama3.2:latest", ps)
	}
	if m.SizeVRAM != m.Size || m.ContextLength != 4096 || time.Until(m.ExpiresAt) < 4*time.Minute {
		t.Errorf("ps entry = %+v, want size_vram = size, context 4096, expiry ~5m", m)
	}

	steps := []struct {
		name       string
		req        api.GenerateRequest
		chat       bool
		wantReason string
		wantLoaded bool
	}{
		{"generate loads", api.GenerateRequest{Model: "qwen3:8b", KeepAlive: &api.Duration{Duration: time.Hour}}, false, "load", true},
		{"generate unloads", api.GenerateRequest{Model: "qwen3:8b", KeepAlive: &api.Duration{}}, false, "unload", false},
		{"chat loads", api.GenerateRequest{Model: "qwen3:8b"}, true, "load", true},
		{"chat unloads", api.GenerateRequest{Model: "qwen3:8b", KeepAlive: &api.Duration{}}, true, "unload", false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var reason string
			var calls int
			var err error
			if st.chat {
				err = c.Chat(t.Context(), &api.ChatRequest{Model: st.req.Model, KeepAlive: st.req.KeepAlive}, func(r api.ChatResponse) error {
					calls++
					reason = r.DoneReason
					if r.Message.Role != "assistant" || r.Message.Content != "" {
						t.Errorf("message = %+v, want empty assistant message", r.Message)
					}
					return nil
				})
			} else {
				err = c.Generate(t.Context(), &st.req, func(r api.GenerateResponse) error {
					calls++
					reason = r.DoneReason
					return nil
				})
			}
			if err != nil || calls != 1 || reason != st.wantReason {
				t.Fatalf("got %d responses, done_reason %q, err %v; want 1, %q", calls, reason, err, st.wantReason)
			}
			_, loaded := running()["qwen3:8b"]
			if loaded != st.wantLoaded {
				t.Errorf("qwen3:8b in ps = %v, want %v", loaded, st.wantLoaded)
			}
		})
	}

	t.Run("serving a request loads with num_ctx", func(t *testing.T) {
		runGenerate(t, c, api.GenerateRequest{Model: "qwen3:8b", Prompt: "hi", Options: map[string]any{"num_ctx": 8192}})
		if m := running()["qwen3:8b"]; m.ContextLength != 8192 {
			t.Errorf("context_length = %d, want 8192", m.ContextLength)
		}
	})
	t.Run("keep_alive 0 unloads after serving", func(t *testing.T) {
		runGenerate(t, c, api.GenerateRequest{Model: "qwen3:8b", Prompt: "hi", KeepAlive: &api.Duration{}})
		if _, ok := running()["qwen3:8b"]; ok {
			t.Errorf("qwen3:8b still in ps after keep_alive 0")
		}
	})
}

func TestShow(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	tests := []struct {
		name     string
		req      api.ShowRequest
		wantCaps []model.Capability
		wantArch string
	}{
		{"by model", api.ShowRequest{Model: "llama3.2"}, []model.Capability{"completion", "tools", "insert"}, "llama"},
		{"by deprecated name", api.ShowRequest{Name: "Qwen3:8B"}, []model.Capability{"completion", "thinking"}, "qwen3"},
		{"embedding model", api.ShowRequest{Model: "nomic-embed-text"}, []model.Capability{"embedding"}, "nomic-bert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := c.Show(t.Context(), &tt.req)
			if err != nil {
				t.Fatalf("show: %v", err)
			}
			if !slices.Equal(r.Capabilities, tt.wantCaps) {
				t.Errorf("capabilities = %v, want %v", r.Capabilities, tt.wantCaps)
			}
			if got := r.ModelInfo["general.architecture"]; got != tt.wantArch {
				t.Errorf("general.architecture = %v, want %s", got, tt.wantArch)
			}
			for _, k := range []string{"general.parameter_count", tt.wantArch + ".context_length"} {
				if _, ok := r.ModelInfo[k].(float64); !ok {
					t.Errorf("model_info[%q] = %v, want a number", k, r.ModelInfo[k])
				}
			}
			if !strings.HasPrefix(r.Modelfile, `# Modelfile generated by "ollama show"`) {
				t.Errorf("modelfile = %q", r.Modelfile)
			}
			if r.Details.Family != tt.wantArch || r.ModifiedAt.IsZero() || r.Template == "" || r.License == "" {
				t.Errorf("show = %+v, want details, modified_at, template and license", r)
			}
		})
	}
	r, err := c.Show(t.Context(), &api.ShowRequest{Model: "llama3.2"})
	if err != nil {
		t.Fatalf("show: %v", err)
	}
	if !strings.Contains(r.Template, ".Suffix") || !strings.Contains(r.Parameters, `stop                           "<|eot_id|>"`) {
		t.Errorf("template %q / parameters %q: want .Suffix and Ollama's parameter format", r.Template, r.Parameters)
	}
}

func TestEmbed(t *testing.T) {
	cfg := fastConfig()
	cfg.Models[1].EmbeddingLength = 16
	_, c := start(t, ollamasim.New(cfg))
	_, c2 := start(t, ollamasim.New(cfg))

	norm := func(v []float32) float64 {
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s)
	}
	tests := []struct {
		name     string
		req      api.EmbedRequest
		wantN    int
		wantDims int
	}{
		{"one string", api.EmbedRequest{Model: "nomic-embed-text", Input: "hello world"}, 1, 16},
		{"batch", api.EmbedRequest{Model: "nomic-embed-text", Input: []string{"a", "b", "c"}}, 3, 16},
		{"dimensions", api.EmbedRequest{Model: "nomic-embed-text", Input: "hello world", Dimensions: 4}, 1, 4},
		{"empty string loads", api.EmbedRequest{Model: "nomic-embed-text", Input: ""}, 0, 0},
		{"empty list loads", api.EmbedRequest{Model: "nomic-embed-text", Input: []string{}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := c.Embed(t.Context(), &tt.req)
			if err != nil {
				t.Fatalf("embed: %v", err)
			}
			if r.Model != tt.req.Model || len(r.Embeddings) != tt.wantN {
				t.Fatalf("got model %q with %d vectors, want %q with %d", r.Model, len(r.Embeddings), tt.req.Model, tt.wantN)
			}
			r2, err := c2.Embed(t.Context(), &tt.req)
			if err != nil {
				t.Fatalf("embed on second server: %v", err)
			}
			for i, v := range r.Embeddings {
				if len(v) != tt.wantDims || math.Abs(norm(v)-1) > 1e-5 {
					t.Errorf("vector %d: %d dims, norm %v; want %d, 1", i, len(v), norm(v), tt.wantDims)
				}
				if !slices.Equal(v, r2.Embeddings[i]) {
					t.Errorf("vector %d differs between servers with the same seed", i)
				}
			}
			if tt.wantN > 0 && (r.TotalDuration <= 0 || r.PromptEvalCount <= 0) {
				t.Errorf("metrics = %v, %d; want positive", r.TotalDuration, r.PromptEvalCount)
			}
		})
	}

	t.Run("legacy embeddings are the unnormalised vector", func(t *testing.T) {
		legacy, err := c.Embeddings(t.Context(), &api.EmbeddingRequest{Model: "nomic-embed-text", Prompt: "hello world"})
		if err != nil {
			t.Fatalf("embeddings: %v", err)
		}
		modern, err := c.Embed(t.Context(), &api.EmbedRequest{Model: "nomic-embed-text", Input: "hello world"})
		if err != nil {
			t.Fatalf("embed: %v", err)
		}
		var n float64
		for _, x := range legacy.Embedding {
			n += x * x
		}
		n = math.Sqrt(n)
		if len(legacy.Embedding) != 16 || math.Abs(n-1) < 1e-3 {
			t.Fatalf("legacy vector has %d dims and norm %v; want 16 and not normalised", len(legacy.Embedding), n)
		}
		for i, x := range legacy.Embedding {
			if math.Abs(x/n-float64(modern.Embeddings[0][i])) > 1e-5 {
				t.Fatalf("legacy and /api/embed vectors point different ways at %d", i)
			}
		}
		empty, err := c.Embeddings(t.Context(), &api.EmbeddingRequest{Model: "nomic-embed-text"})
		if err != nil || empty.Embedding == nil || len(empty.Embedding) != 0 {
			t.Errorf("empty prompt = %v, %v; want an empty, non-null embedding", empty, err)
		}
	})
}

func TestStatsCountTokens(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	_, c := start(t, sim)
	runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: "hi", Options: map[string]any{"num_predict": 7}})
	runChat(t, c, api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: "hi"}}, Options: map[string]any{"num_predict": 3}})
	got := sim.Stats()
	// llama3.2 is Loaded from the start, so nothing loads; each prompt is
	// one word, and the second is a chat, which shares nothing with a generate.
	want := ollamasim.Stats{Requests: 2, Completed: 2, Tokens: 10, MaxActive: 1, PromptTokens: 2}
	if got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

// TestWireShape checks the exact JSON keys of the lines, which the typed
// client cannot see.
func TestWireShape(t *testing.T) {
	base, _ := start(t, ollamasim.New(fastConfig()))
	r := do(t, base, "POST", "/api/generate", `{"model":"llama3.2","prompt":"hi","options":{"num_predict":2}}`)
	if r.status != 200 || r.contentType != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q; want 200 application/x-ndjson", r.status, r.contentType)
	}
	lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
	if len(lines) != 3 || !strings.HasSuffix(r.body, "}\n") {
		t.Fatalf("body = %q, want 3 NDJSON lines", r.body)
	}
	keys := func(line string) []string {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	if got, want := keys(lines[0]), []string{"created_at", "done", "model", "response"}; !slices.Equal(got, want) {
		t.Errorf("token line keys = %v, want %v", got, want)
	}
	want := []string{"context", "created_at", "done", "done_reason", "eval_count", "eval_duration", "load_duration",
		"model", "prompt_eval_count", "prompt_eval_duration", "response", "total_duration"}
	if got := keys(lines[2]); !slices.Equal(got, want) {
		t.Errorf("done line keys = %v, want %v", got, want)
	}
	var first api.GenerateResponse
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.CreatedAt.Location() != time.UTC || time.Since(first.CreatedAt) > time.Minute {
		t.Errorf("created_at = %v, want recent UTC", first.CreatedAt)
	}

	r = do(t, base, "POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}`)
	if r.status != 200 || r.contentType != "application/json; charset=utf-8" || strings.HasSuffix(r.body, "\n") {
		t.Errorf("stream:false chat: status %d, content type %q, body %q", r.status, r.contentType, r.body)
	}
	if !strings.Contains(r.body, `"message":{"role":"assistant","content":"`) || !strings.Contains(r.body, `"done":true,"done_reason":"stop"`) {
		t.Errorf("stream:false chat body = %s", r.body)
	}
}

func TestLogprobs(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	req := api.ChatRequest{
		Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: "hi"}},
		Logprobs: true, TopLogprobs: 2, Options: map[string]any{"num_predict": 4},
	}
	var text string
	var lps []api.Logprob
	err := c.Chat(t.Context(), &req, func(r api.ChatResponse) error {
		text += r.Message.Content
		lps = append(lps, r.Logprobs...)
		return nil
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if len(lps) != 4 {
		t.Fatalf("got %d logprobs, want one per token (4)", len(lps))
	}
	var joined string
	for i, lp := range lps {
		joined += lp.Token
		if lp.Logprob > 0 || len(lp.Bytes) != len(lp.Token) || len(lp.TopLogprobs) != 2 || lp.TopLogprobs[0].Token != lp.Token {
			t.Errorf("logprobs[%d] = %+v, want a negative logprob, bytes and 2 alternatives led by the token", i, lp)
		}
	}
	if joined != text {
		t.Errorf("logprob tokens %q do not spell the content %q", joined, text)
	}
	req.Logprobs, req.TopLogprobs = false, 0
	if plain := runChat(t, c, req).text; plain != text {
		t.Errorf("asking for logprobs changed the text: %q vs %q", text, plain)
	}
}

// TestEmbedTruncates checks that an input longer than the context is cut
// to it, as Ollama 0.32's EmbedHandler does unless truncate is false (then
// 400, in TestRoutesAndErrors).
func TestEmbedTruncates(t *testing.T) {
	_, c := start(t, ollamasim.New(fastConfig()))
	embed := func(input string, opts map[string]any) *api.EmbedResponse {
		t.Helper()
		resp, err := c.Embed(t.Context(), &api.EmbedRequest{Model: "nomic-embed-text", Input: input, Options: opts})
		if err != nil {
			t.Fatalf("embed %q: %v", input, err)
		}
		return resp
	}
	long := embed("one two three four five", map[string]any{"num_ctx": 3})
	short := embed("one two three", nil)
	if long.PromptEvalCount != 3 || !slices.Equal(long.Embeddings[0], short.Embeddings[0]) {
		t.Errorf("5 words with num_ctx 3: %d tokens, vector %v; want 3 and the vector of the first 3 words %v", long.PromptEvalCount, long.Embeddings[0], short.Embeddings[0])
	}
}
