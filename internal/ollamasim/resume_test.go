package ollamasim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// resumeConfig is fastConfig with a thinking model that also calls tools.
func resumeConfig() ollamasim.Config {
	cfg := fastConfig()
	cfg.Models = append(cfg.Models, ollamasim.Model{Name: "qwen3:tools", Capabilities: []string{"completion", "thinking", "tools"}})
	return cfg
}

var createdAt = regexp.MustCompile(`"created_at":"[^"]*"`)

// ndjson is a native stream split into its token lines, with created_at
// blanked so that lines of two runs compare byte for byte, and its done line.
type ndjson struct {
	lines []string
	done  string
}

func readNDJSON(t *testing.T, r rawResponse) ndjson {
	t.Helper()
	if r.status != 200 || r.contentType != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q, body %q; want a 200 NDJSON stream", r.status, r.contentType, r.body)
	}
	lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
	var s ndjson
	for i, l := range lines {
		if i == len(lines)-1 {
			s.done = l
			break
		}
		s.lines = append(s.lines, createdAt.ReplaceAllString(l, `"created_at":"2000-01-01T00:00:00Z"`))
	}
	if !strings.Contains(s.done, `"done":true`) {
		t.Fatalf("last line %q is not a done line", s.done)
	}
	return s
}

// cuts are the token counts at which a run of n tokens is interrupted:
// before the first, after the first, in the middle, before the last, after
// the last (when whole is true) and around the end of thinking tokens of
// thinking (when there are any).
func cuts(n int, whole bool, thinking int) []int {
	ks := []int{0, 1, n / 2, n - 1}
	if whole {
		ks = append(ks, n)
	}
	if thinking > 0 {
		ks = append(ks, thinking-1, thinking, thinking+1)
	}
	var out []int
	for _, k := range ks {
		if k >= 0 && k <= n && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// withBudget returns options with num_predict lowered by the k tokens the
// client already has, as a resuming caller must; nil stays nil.
func withBudget(opts map[string]any, k int) map[string]any {
	out := make(map[string]any, len(opts))
	for key, v := range opts {
		out[key] = v
	}
	if n, ok := opts["num_predict"].(int); ok {
		out["num_predict"] = n - k
	}
	return out
}

// checkDone compares the done line of a continuation that generated
// wantEval tokens with the uninterrupted run's.
func checkDone[T any](t *testing.T, got, full string, wantEval, wantPrompt int, reason func(T) (string, api.Metrics)) {
	t.Helper()
	gotReason, gotM := reason(decodeJSON[T](t, got))
	fullReason, _ := reason(decodeJSON[T](t, full))
	if gotReason != fullReason {
		t.Errorf("done_reason = %q, want the uninterrupted run's %q", gotReason, fullReason)
	}
	if gotM.EvalCount != wantEval {
		t.Errorf("eval_count = %d, want %d", gotM.EvalCount, wantEval)
	}
	if wantPrompt > 0 && gotM.PromptEvalCount != wantPrompt {
		t.Errorf("prompt_eval_count = %d, want %d", gotM.PromptEvalCount, wantPrompt)
	}
}

func chatDone(r api.ChatResponse) (string, api.Metrics) { return r.DoneReason, r.Metrics }
func genDone(r api.GenerateResponse) (string, api.Metrics) {
	return r.DoneReason, r.Metrics
}

func TestChatContinuation(t *testing.T) {
	base, _ := start(t, ollamasim.New(resumeConfig()))
	msgs := []api.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello there"}}
	weather := api.Tool{Type: "function", Function: api.ToolFunction{Name: "get_weather"}}
	tests := []struct {
		name         string
		req          api.ChatRequest
		dropThinking bool // the caller keeps only the content, once thinking is over
	}{
		{"plain", api.ChatRequest{Model: "llama3.2", Messages: msgs}, false},
		{"plain num_predict", api.ChatRequest{Model: "llama3.2", Messages: msgs, Options: map[string]any{"num_predict": 9}}, false},
		{"plain stop", api.ChatRequest{Model: "llama3.2", Messages: msgs, Options: map[string]any{"stop": []string{"e"}}}, false},
		{"plain logprobs", api.ChatRequest{Model: "llama3.2", Messages: msgs, Logprobs: true, TopLogprobs: 2}, false},
		{"thinking", api.ChatRequest{Model: "qwen3:8b", Messages: msgs}, false},
		{"thinking num_predict", api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Options: map[string]any{"num_predict": 13}}, false},
		{"thinking off", api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Think: &api.ThinkValue{Value: false}}, false},
		{"thinking without the thinking", api.ChatRequest{Model: "qwen3:8b", Messages: msgs}, true},
		{"thinking without the thinking, num_predict", api.ChatRequest{Model: "qwen3:8b", Messages: msgs, Options: map[string]any{"num_predict": 14}}, true},
		{"thinking then a tool call", api.ChatRequest{Model: "qwen3:tools", Messages: msgs, Tools: api.Tools{weather}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(tt.req)
			full := readNDJSON(t, do(t, base, "POST", "/api/chat", string(body)))
			var chunks []api.ChatResponse
			for _, l := range full.lines {
				chunks = append(chunks, decodeJSON[api.ChatResponse](t, l))
			}
			thinkingChunks := 0
			for _, c := range chunks {
				if c.Message.Thinking != "" {
					thinkingChunks++
				}
			}
			n := len(chunks)
			if chunks[n-1].Message.ToolCalls != nil {
				n-- // a tool call is never part of a prefix
			}
			_, hasBudget := tt.req.Options["num_predict"]
			fullPrompt := decodeJSON[api.ChatResponse](t, full.done).PromptEvalCount
			for _, k := range cuts(n, !hasBudget, thinkingChunks) {
				if tt.dropThinking && k <= thinkingChunks {
					continue // without content, nothing says the thinking was received
				}
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
					var thinking, content strings.Builder
					for _, c := range chunks[:k] {
						thinking.WriteString(c.Message.Thinking)
						content.WriteString(c.Message.Content)
					}
					prefill := api.Message{Role: "assistant", Content: content.String(), Thinking: thinking.String()}
					if tt.dropThinking {
						prefill.Thinking = ""
					}
					req := tt.req
					req.Messages = append(slices.Clone(msgs), prefill)
					req.Options = withBudget(tt.req.Options, k)
					body, _ := json.Marshal(req)
					got := readNDJSON(t, do(t, base, "POST", "/api/chat", string(body)))
					if !slices.Equal(got.lines, full.lines[k:]) {
						t.Fatalf("continuation after %d tokens:\n%s\nwant the rest of the uninterrupted run:\n%s", k, strings.Join(got.lines, "\n"), strings.Join(full.lines[k:], "\n"))
					}
					var gotThinking, gotContent strings.Builder
					for _, l := range got.lines {
						c := decodeJSON[api.ChatResponse](t, l)
						gotThinking.WriteString(c.Message.Thinking)
						gotContent.WriteString(c.Message.Content)
					}
					var wantThinking, wantContent strings.Builder
					for _, c := range chunks {
						wantThinking.WriteString(c.Message.Thinking)
						wantContent.WriteString(c.Message.Content)
					}
					if thinking.String()+gotThinking.String() != wantThinking.String() || content.String()+gotContent.String() != wantContent.String() {
						t.Errorf("prefix + continuation = %q / %q, want %q / %q", thinking.String()+gotThinking.String(), content.String()+gotContent.String(), wantThinking.String(), wantContent.String())
					}
					wantPrompt := fullPrompt + k
					if tt.dropThinking {
						wantPrompt = fullPrompt + k - thinkingChunks
					}
					checkDone(t, got.done, full.done, len(full.lines)-k, wantPrompt, chatDone)
				})
			}
		})
	}
}

func TestChatContinuationStreamFalse(t *testing.T) {
	_, c := start(t, ollamasim.New(resumeConfig()))
	msgs := []api.Message{{Role: "user", Content: "Tell me a story"}}
	full := nativeChat(t, c, api.ChatRequest{Model: "qwen3:8b", Messages: msgs})
	words := strings.SplitAfter(full.Message.Content, " ")
	prefix := strings.Join(words[:3], "")
	got := nativeChat(t, c, api.ChatRequest{Model: "qwen3:8b", Messages: append(slices.Clone(msgs),
		api.Message{Role: "assistant", Thinking: full.Message.Thinking, Content: prefix})})
	if got.Message.Thinking != "" || prefix+got.Message.Content != full.Message.Content {
		t.Errorf("continuation = %q / %q, want no thinking and %q", got.Message.Thinking, got.Message.Content, strings.TrimPrefix(full.Message.Content, prefix))
	}
	if got.DoneReason != full.DoneReason || got.EvalCount != full.EvalCount-len(strings.Fields(full.Message.Thinking))-3 {
		t.Errorf("done_reason %q, eval_count %d; want %q, %d", got.DoneReason, got.EvalCount, full.DoneReason, full.EvalCount-len(strings.Fields(full.Message.Thinking))-3)
	}
}

func TestChatNotAPrefix(t *testing.T) {
	sim := ollamasim.New(resumeConfig())
	_, c := start(t, sim)
	msgs := []api.Message{{Role: "user", Content: "Hello there"}}
	full := nativeChat(t, c, api.ChatRequest{Model: "qwen3:8b", Messages: msgs})
	thinking := full.Message.Thinking
	first, _, _ := strings.Cut(thinking, " ")
	tests := []struct {
		name    string
		prefill api.Message
	}{
		{"other text", api.Message{Role: "assistant", Content: "Nothing like the answer "}},
		{"inside a token", api.Message{Role: "assistant", Thinking: first[:2]}},
		{"token without its space", api.Message{Role: "assistant", Thinking: first}},
		{"content without the thinking before it is over", api.Message{Role: "assistant", Thinking: thinking[:len(first)+1], Content: full.Message.Content[:4]}},
		{"thinking with the wrong content", api.Message{Role: "assistant", Thinking: thinking, Content: "Nothing "}},
		{"tool calls", api.Message{Role: "assistant", ToolCalls: []api.ToolCall{{Function: api.ToolCallFunction{Name: "f"}}}}},
		{"longer than the answer", api.Message{Role: "assistant", Thinking: thinking, Content: full.Message.Content + "More "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := api.ChatRequest{Model: "qwen3:8b", Messages: append(slices.Clone(msgs), tt.prefill)}
			got, again := nativeChat(t, c, req), nativeChat(t, c, req)
			if got.Message.Content != again.Message.Content || got.Message.Thinking != again.Message.Thinking {
				t.Errorf("same request answered %q and %q, want identical", got.Message.Content, again.Message.Content)
			}
			// An answer of its own: the default length, not the rest of full.
			if got.EvalCount != 24 || got.Message.Thinking == "" || got.Message.Content == full.Message.Content {
				t.Errorf("answer %q / %q with eval_count %d, want a whole new answer of 24 tokens", got.Message.Thinking, got.Message.Content, got.EvalCount)
			}
		})
	}
}

var compatIDs = regexp.MustCompile(`"id":"chatcmpl-\d+","object":"chat.completion.chunk","created":\d+`)

func TestOpenAIChatContinuation(t *testing.T) {
	base, _ := start(t, ollamasim.New(resumeConfig()))
	tests := []struct {
		name  string
		model string
		extra string // more request fields
	}{
		{"plain", "llama3.2", ``},
		{"max_tokens", "llama3.2", `"max_tokens":7,`},
		{"reasoning", "qwen3:8b", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			request := func(prefill string, maxTokens int) string {
				extra := tt.extra
				if maxTokens >= 0 {
					extra = fmt.Sprintf(`"max_tokens":%d,`, maxTokens)
				}
				return `{"model":"` + tt.model + `","stream":true,` + extra + `"messages":[{"role":"user","content":"Hello there"}` + prefill + `]}`
			}
			events := func(body string) []string {
				r := do(t, base, "POST", "/v1/chat/completions", body)
				if r.status != 200 || r.contentType != "text/event-stream" {
					t.Fatalf("status %d, content type %q, body %q", r.status, r.contentType, r.body)
				}
				payloads, done := sseEvents(t, r.body)
				if !done {
					t.Fatalf("stream did not end with [DONE]: %q", r.body)
				}
				for i, p := range payloads {
					p = compatIDs.ReplaceAllString(p, `"id":"","object":"chat.completion.chunk","created":0`)
					// Only a stream's first chunk has the role (Ollama 0.32),
					// so a continuation's first chunk differs from the
					// uninterrupted run's in that alone.
					if i == 0 {
						if !strings.Contains(p, `"delta":{"role":"assistant",`) {
							t.Errorf("first chunk %s has no role", p)
						}
						p = strings.Replace(p, `"role":"assistant",`, "", 1)
					}
					payloads[i] = p
				}
				return payloads
			}
			full := events(request("", -1))
			tokens := full[:len(full)-1] // the last event is the done line's
			var deltas []openai.ChatCompletionChunk
			for _, p := range tokens {
				deltas = append(deltas, decodeJSON[openai.ChatCompletionChunk](t, p))
			}
			text := func(chunks []openai.ChatCompletionChunk) (reasoning, content string) {
				for _, c := range chunks {
					reasoning += c.Choices[0].Delta.Reasoning
					content += c.Choices[0].Delta.Content.(string)
				}
				return reasoning, content
			}
			wantReasoning, wantContent := text(deltas)
			limited := tt.extra != ""
			thinking := 0
			for _, d := range deltas {
				if d.Choices[0].Delta.Reasoning != "" {
					thinking++
				}
			}
			for _, k := range cuts(len(tokens), !limited, thinking) {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
					reasoning, content := text(deltas[:k])
					prefill, _ := json.Marshal(map[string]string{"role": "assistant", "content": content, "reasoning": reasoning})
					maxTokens := -1
					if limited {
						maxTokens = len(tokens) - k
					}
					got := events(request(","+string(prefill), maxTokens))
					if k == len(tokens) {
						// Nothing left to say: Ollama still opens the stream
						// with an empty chunk (the one with the role).
						if len(got) != 2 || !strings.Contains(got[0], `"delta":{"content":""},"finish_reason":null`) {
							t.Fatalf("continuation of the whole answer = %q, want one empty chunk and the finish chunk", got)
						}
						got = got[1:]
					}
					if !slices.Equal(got[:len(got)-1], tokens[k:]) {
						t.Fatalf("continuation after %d tokens:\n%s\nwant:\n%s", k, strings.Join(got[:len(got)-1], "\n"), strings.Join(tokens[k:], "\n"))
					}
					var chunks []openai.ChatCompletionChunk
					for _, p := range got[:len(got)-1] {
						chunks = append(chunks, decodeJSON[openai.ChatCompletionChunk](t, p))
					}
					r, c := text(chunks)
					if reasoning+r != wantReasoning || content+c != wantContent {
						t.Errorf("prefix + continuation = %q / %q, want %q / %q", reasoning+r, content+c, wantReasoning, wantContent)
					}
					if got[len(got)-1] != full[len(full)-1] {
						t.Errorf("last chunk = %s, want %s", got[len(got)-1], full[len(full)-1])
					}
				})
			}
		})
	}
}

// rawAnswer is how the beginning of an answer follows the rendered
// template in a raw prompt: thinking in <think> tags, then the content.
func rawAnswer(thinking, content string) string {
	switch {
	case thinking == "":
		return content
	case content == "":
		return "<think>" + thinking
	}
	return "<think>" + thinking + "</think>" + content
}

func TestGenerateContinuation(t *testing.T) {
	base, _ := start(t, ollamasim.New(resumeConfig()))
	tests := []struct {
		name string
		req  api.GenerateRequest
		// form writes the received thinking and content after the template.
		form func(thinking, content string, k, thinkingTokens int) string
	}{
		{"plain", api.GenerateRequest{Model: "llama3.2", Prompt: "Why is the sky blue?"}, nil},
		{"system", api.GenerateRequest{Model: "llama3.2", Prompt: "Why is the sky blue?", System: "Be brief."}, nil},
		{"num_predict", api.GenerateRequest{Model: "llama3.2", Prompt: "Count", Options: map[string]any{"num_predict": 6}}, nil},
		{"stop and logprobs", api.GenerateRequest{Model: "llama3.2", Prompt: "Count", Logprobs: true, Options: map[string]any{"stop": []string{"r"}}}, nil},
		{"suffix", api.GenerateRequest{Model: "llama3.2", Prompt: "func add(", Suffix: "}"}, nil},
		{"raw", api.GenerateRequest{Model: "llama3.2", Prompt: "[INST] Why is the Sky blue? [/INST] ", Raw: true}, nil},
		{"raw num_predict", api.GenerateRequest{Model: "llama3.2", Prompt: "Tell Me A", Raw: true, Options: map[string]any{"num_predict": 8}}, nil},
		{"raw thinking", api.GenerateRequest{Model: "qwen3:8b", Prompt: "<s>Why?", Raw: true}, nil},
		{"context", api.GenerateRequest{Model: "llama3.2", Prompt: "And then?", Context: []int{5, 6, 7}}, nil},
		{"thinking", api.GenerateRequest{Model: "qwen3:8b", Prompt: "Why is the sky blue?"}, nil},
		{"thinking num_predict", api.GenerateRequest{Model: "qwen3:8b", Prompt: "Why?", Options: map[string]any{"num_predict": 10}}, nil},
		{"thinking closed", api.GenerateRequest{Model: "qwen3:8b", Prompt: "Why?"}, func(thinking, content string, k, tk int) string {
			if k == tk {
				return "<think>" + thinking + "</think>"
			}
			return rawAnswer(thinking, content)
		}},
		{"thinking dropped", api.GenerateRequest{Model: "qwen3:8b", Prompt: "Why?"}, func(thinking, content string, k, tk int) string {
			if k <= tk {
				return rawAnswer(thinking, content)
			}
			return content
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(tt.req)
			full := readNDJSON(t, do(t, base, "POST", "/api/generate", string(body)))
			var chunks []api.GenerateResponse
			thinkingTokens := 0
			for _, l := range full.lines {
				c := decodeJSON[api.GenerateResponse](t, l)
				chunks = append(chunks, c)
				if c.Thinking != "" {
					thinkingTokens++
				}
			}
			debug := tt.req
			debug.DebugRenderOnly = true
			body, _ = json.Marshal(debug)
			r := do(t, base, "POST", "/api/generate", string(body))
			rendered := decodeJSON[api.GenerateResponse](t, r.body).DebugInfo
			if r.status != 200 || rendered == nil || rendered.RenderedTemplate == "" {
				t.Fatalf("_debug_render_only: status %d, body %s", r.status, r.body)
			}
			fullPrompt := decodeJSON[api.GenerateResponse](t, full.done).PromptEvalCount
			_, hasBudget := tt.req.Options["num_predict"]
			for _, k := range cuts(len(chunks), !hasBudget, thinkingTokens) {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
					var thinking, content strings.Builder
					for _, c := range chunks[:k] {
						thinking.WriteString(c.Thinking)
						content.WriteString(c.Response)
					}
					answer := rawAnswer(thinking.String(), content.String())
					if tt.form != nil {
						answer = tt.form(thinking.String(), content.String(), k, thinkingTokens)
					}
					req := api.GenerateRequest{
						Model: tt.req.Model, Prompt: rendered.RenderedTemplate + answer, Raw: true,
						Options: withBudget(tt.req.Options, k), Logprobs: tt.req.Logprobs,
					}
					body, _ := json.Marshal(req)
					got := readNDJSON(t, do(t, base, "POST", "/api/generate", string(body)))
					if !slices.Equal(got.lines, full.lines[k:]) {
						t.Fatalf("continuation of %q:\n%s\nwant the rest of the uninterrupted run:\n%s", answer, strings.Join(got.lines, "\n"), strings.Join(full.lines[k:], "\n"))
					}
					var gotText strings.Builder
					for _, l := range got.lines {
						c := decodeJSON[api.GenerateResponse](t, l)
						gotText.WriteString(c.Thinking + c.Response)
					}
					var wantText strings.Builder
					for _, c := range chunks {
						wantText.WriteString(c.Thinking + c.Response)
					}
					if thinking.String()+content.String()+gotText.String() != wantText.String() {
						t.Errorf("prefix + continuation = %q, want %q", thinking.String()+content.String()+gotText.String(), wantText.String())
					}
					checkDone(t, got.done, full.done, len(full.lines)-k, fullPrompt+k, genDone)
					if strings.Contains(got.done, `"context"`) {
						t.Errorf("raw done line has a context: %s", got.done)
					}
				})
			}
		})
	}
}

func TestGenerateContinuationEmptyContext(t *testing.T) {
	// "context":[] renders like no context at all, but answers differently.
	base, _ := start(t, ollamasim.New(resumeConfig()))
	withEmpty := readNDJSON(t, do(t, base, "POST", "/api/generate", `{"model":"llama3.2","prompt":"And then?","context":[]}`))
	without := readNDJSON(t, do(t, base, "POST", "/api/generate", `{"model":"llama3.2","prompt":"And then?"}`))
	if slices.Equal(withEmpty.lines, without.lines) {
		t.Fatalf("\"context\":[] and no context gave the same answer; this test needs them to differ")
	}
	for _, full := range []ndjson{withEmpty, without} {
		var prefix string
		for _, l := range full.lines[:5] {
			prefix += decodeJSON[api.GenerateResponse](t, l).Response
		}
		body, _ := json.Marshal(api.GenerateRequest{Model: "llama3.2", Raw: true, Prompt: "<|user|>\nAnd then?<|end|>\n<|assistant|>\n" + prefix})
		got := readNDJSON(t, do(t, base, "POST", "/api/generate", string(body)))
		if !slices.Equal(got.lines, full.lines[5:]) {
			t.Errorf("continuation of %q:\n%s\nwant:\n%s", prefix, strings.Join(got.lines, "\n"), strings.Join(full.lines[5:], "\n"))
		}
	}
}

func TestRawNotAContinuation(t *testing.T) {
	_, c := start(t, ollamasim.New(resumeConfig()))
	prompt := "Why is the sky blue?"
	full := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: prompt})
	rendered := "<|user|>\n" + prompt + "<|end|>\n<|assistant|>\n"
	first, _, _ := strings.Cut(full.text, " ")
	for _, raw := range []string{
		"Tell me",                    // not a rendering
		rendered + first,             // inside a token
		rendered + "Something else ", // another answer
		"<|user|>\n" + prompt + "<|end|>\n<|assistant|>\n\n" + first + " ",      // not the rendering
		"<|system|>\n<|end|>\n<|user|>\n" + prompt + "<|end|>\n<|assistant|>\n", // no such system
		"<|context|>\nx<|end|>\n" + rendered,                                    // bad context
		"<|user|>\n<|end|>\n<|assistant|>\n",                                    // empty prompt
		rendered + "<think>",                                                    // a model that does not think
		prompt + "<think>" + first + " ",                                        // likewise, after a raw prompt
		prompt + " " + full.text[:len(first)+1] + "x",                           // a raw prompt, then not its answer
	} {
		t.Run(raw, func(t *testing.T) {
			req := api.GenerateRequest{Model: "llama3.2", Prompt: raw, Raw: true}
			got, again := runGenerate(t, c, req), runGenerate(t, c, req)
			if got.text != again.text || got.final.EvalCount != 24 || strings.HasSuffix(full.text, got.text) {
				t.Errorf("answer %q (again %q), eval_count %d; want one deterministic answer of its own, 24 tokens", got.text, again.text, got.final.EvalCount)
			}
		})
	}
}

func TestDebugRenderOnly(t *testing.T) {
	cfg := resumeConfig()
	cfg.TokensPerSecond = 20 // a generation holds the only slot for a while
	cfg.MaxQueue = -1        // and nobody may wait for it
	sim := ollamasim.New(cfg)
	base, c := start(t, sim)

	// Hold the slot: a debug render must still answer, since it takes none.
	ctx, cancel := context.WithCancel(t.Context())
	held := make(chan struct{})
	go func() {
		defer close(held)
		// Canceled at the end of the test; the error says only that.
		_ = c.Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: "hold"}, func(api.GenerateResponse) error { return nil })
	}()
	t.Cleanup(func() { cancel(); <-held })
	waitFor(t, "a generation holding the slot", func() bool { return sim.Stats().Active == 1 })
	if r := do(t, base, "POST", "/api/generate", `{"model":"llama3.2","prompt":"x"}`); r.status != 503 {
		t.Fatalf("a second generation got %d, want 503 while the slot is held", r.status)
	}
	requests := sim.Stats().Requests

	const ts = `"created_at":"[^"]+"`
	tests := []struct {
		name, path, body string
		want             string // regexp of the whole body
	}{
		{"generate", "/api/generate", `{"model":"llama3.2","prompt":"Why?","_debug_render_only":true}`,
			`{"model":"llama3.2",` + ts + `,"response":"","done":false,"_debug_info":{"rendered_template":"\u003c|user|\u003e\nWhy?\u003c|end|\u003e\n\u003c|assistant|\u003e\n"}}`},
		{"generate system and images", "/api/generate", `{"model":"llama3.2","prompt":"Why?","system":"Be brief.","images":["AAAA","AAAA"],"_debug_render_only":true,"stream":true}`,
			`{"model":"llama3.2",` + ts + `,"response":"","done":false,"_debug_info":{"rendered_template":"\u003c|system|\u003e\nBe brief.\u003c|end|\u003e\n\u003c|user|\u003e\nWhy?\u003c|end|\u003e\n\u003c|assistant|\u003e\n","image_count":2}}`},
		{"generate raw", "/api/generate", `{"model":"llama3.2","prompt":"\u003cs\u003eWhy?","raw":true,"_debug_render_only":true}`,
			`{"model":"llama3.2",` + ts + `,"response":"","done":false,"_debug_info":{"rendered_template":"\u003cs\u003eWhy?"}}`},
		{"generate suffix and context", "/api/generate", `{"model":"llama3.2","prompt":"f(","suffix":")","system":"s","context":[1,2],"_debug_render_only":true}`,
			`{"model":"llama3.2",` + ts + `,"response":"","done":false,"_debug_info":{"rendered_template":"\u003c|context|\u003e\n1 2\u003c|end|\u003e\n\u003c|fim_prefix|\u003ef(\u003c|fim_suffix|\u003e)\u003c|fim_middle|\u003e"}}`},
		{"chat", "/api/chat", `{"model":"llama3.2","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi","images":["AAAA"]},{"role":"assistant","content":"Hello "}],"_debug_render_only":true}`,
			`{"model":"llama3.2",` + ts + `,"message":{"role":"","content":""},"done":false,"_debug_info":{"rendered_template":"\u003c|system|\u003e\nBe brief.\u003c|end|\u003e\n\u003c|user|\u003e\nHi\u003c|end|\u003e\n\u003c|assistant|\u003e\nHello ","image_count":1}}`},
		{"chat thinking in progress", "/api/chat", `{"model":"qwen3:8b","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"","thinking":"Hmm "}],"_debug_render_only":true}`,
			`{"model":"qwen3:8b",` + ts + `,"message":{"role":"","content":""},"done":false,"_debug_info":{"rendered_template":"\u003c|user|\u003e\nHi\u003c|end|\u003e\n\u003c|assistant|\u003e\n\u003cthink\u003eHmm "}}`},
		{"chat turns and tools", "/api/chat", `{"model":"llama3.2","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{}}}]},{"role":"tool","content":"42"}],"_debug_render_only":true}`,
			`{"model":"llama3.2",` + ts + `,"message":{"role":"","content":""},"done":false,"_debug_info":{"rendered_template":"\u003c|tools|\u003e\n[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"\",\"properties\":null}}}]\u003c|end|\u003e\n\u003c|user|\u003e\nHi\u003c|end|\u003e\n\u003c|assistant|\u003e\n\u003c|tool_call|\u003e{\"index\":0,\"name\":\"f\",\"arguments\":{}}\u003c|end|\u003e\n\u003c|tool|\u003e\n42\u003c|end|\u003e\n\u003c|assistant|\u003e\n"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, "POST", tt.path, tt.body)
			if r.status != 200 || r.contentType != "application/json; charset=utf-8" {
				t.Errorf("status %d, content type %q; want 200 application/json; charset=utf-8", r.status, r.contentType)
			}
			if !regexp.MustCompile(`^` + quoteExceptTS(tt.want) + `$`).MatchString(r.body) {
				t.Errorf("body\n%s\nwant\n%s", r.body, tt.want)
			}
		})
	}
	t.Run("openai", func(t *testing.T) {
		r := do(t, base, "POST", "/v1/chat/completions", `{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}],"_debug_render_only":true}`)
		got := decodeJSON[openai.ChatCompletion](t, r.body)
		if r.status != 200 || got.DebugInfo == nil || got.DebugInfo.RenderedTemplate != "<|user|>\nHi<|end|>\n<|assistant|>\n" {
			t.Errorf("status %d, body %s; want the rendered template in _debug_info", r.status, r.body)
		}
	})
	if got := sim.Stats().Requests; got != requests {
		t.Errorf("Stats.Requests went from %d to %d, want debug renders uncounted", requests, got)
	}
	t.Run("empty prompt still loads", func(t *testing.T) {
		r := do(t, base, "POST", "/api/generate", `{"model":"llama3.2","_debug_render_only":true}`)
		if !strings.Contains(r.body, `"done_reason":"load"`) {
			t.Errorf("body %s, want the load reply, as Ollama checks the prompt first", r.body)
		}
	})
	t.Run("errors first", func(t *testing.T) {
		r := do(t, base, "POST", "/api/generate", `{"model":"nomic-embed-text","prompt":"x","_debug_render_only":true}`)
		if r.status != 400 || r.body != `{"error":"\"nomic-embed-text\" does not support generate"}` {
			t.Errorf("status %d, body %s; want the capability error", r.status, r.body)
		}
	})
}

// quoteExceptTS quotes want for a regexp, keeping the created_at pattern.
func quoteExceptTS(want string) string {
	const ts = `"created_at":"[^"]+"`
	parts := strings.Split(want, ts)
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return strings.Join(parts, ts)
}
