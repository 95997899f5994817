package ollamasim_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/anthropic"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// delta is one streamed piece of an answer, whatever the API: its kind
// ("text" or "thinking") and its text.
type delta struct{ kind, text string }

func joined(ds []delta) (thinking, text string) {
	for _, d := range ds {
		if d.kind == "thinking" {
			thinking += d.text
		} else {
			text += d.text
		}
	}
	return thinking, text
}

// TestMessagesContinuation checks that a /v1/messages request whose last
// message is the beginning of the assistant's answer, as text and thinking
// blocks, gets the rest of that answer, delta for delta, as from /api/chat.
// Real Ollama 0.32.15 continues such a message too, given a template that
// leaves a final assistant message open: with "sKM" (the first three
// tokens of its answer "sKM  + E fD E f 59") as the last assistant text
// block it answered "  + E f 59", where a fresh answer starts with "sKM".
func TestMessagesContinuation(t *testing.T) {
	base, _ := start(t, ollamasim.New(resumeConfig()))
	tests := []struct {
		name         string
		model        string
		maxTokens    int
		dropThinking bool // the client sends back only the text, once there is some
	}{
		{"text", "llama3.2", 9, false},
		{"thinking", "qwen3:8b", 12, false},
		{"thinking dropped", "qwen3:8b", 12, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			request := func(prefill string, maxTokens int) string {
				return fmt.Sprintf(`{"model":%q,"max_tokens":%d,"stream":true,"messages":[{"role":"user","content":"Hello there"}%s]}`, tt.model, maxTokens, prefill)
			}
			stream := func(body string) ([]delta, anthropic.MessageDeltaEvent) {
				t.Helper()
				r := do(t, base, "POST", "/v1/messages", body)
				if r.status != 200 {
					t.Fatalf("status %d, body %q", r.status, r.body)
				}
				var ds []delta
				var end anthropic.MessageDeltaEvent
				evs := namedEvents(t, r.body)
				if evs[len(evs)-1].event != "message_stop" {
					t.Fatalf("stream %s did not end with message_stop", eventNames(evs))
				}
				for _, e := range evs {
					switch e.event {
					case "content_block_delta":
						d := decodeJSON[anthropic.ContentBlockDeltaEvent](t, e.data).Delta
						switch d.Type {
						case "text_delta":
							ds = append(ds, delta{"text", d.Text})
						case "thinking_delta":
							ds = append(ds, delta{"thinking", d.Thinking})
						default:
							t.Fatalf("unexpected delta %s", e.data)
						}
					case "message_delta":
						end = decodeJSON[anthropic.MessageDeltaEvent](t, e.data)
					}
				}
				return ds, end
			}
			full, fullEnd := stream(request("", tt.maxTokens))
			if len(full) != tt.maxTokens {
				t.Fatalf("uninterrupted run streamed %d deltas, want max_tokens %d", len(full), tt.maxTokens)
			}
			thinkingTokens := 0
			for _, d := range full {
				if d.kind == "thinking" {
					thinkingTokens++
				}
			}
			if (thinkingTokens > 0) != (tt.model == "qwen3:8b") {
				t.Fatalf("%d thinking deltas from %s", thinkingTokens, tt.model)
			}
			// max_tokens is required, so the client always asks for what is
			// left, and nothing is left to ask for after the last token.
			for _, k := range cuts(len(full), false, thinkingTokens) {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
					thinking, text := joined(full[:k])
					var blocks []map[string]string
					if thinking != "" && !(tt.dropThinking && text != "") {
						blocks = append(blocks, map[string]string{"type": "thinking", "thinking": thinking, "signature": "sig"})
					}
					if text != "" {
						blocks = append(blocks, map[string]string{"type": "text", "text": text})
					}
					prefill := ""
					if len(blocks) > 0 {
						b, _ := json.Marshal(map[string]any{"role": "assistant", "content": blocks})
						prefill = "," + string(b)
					}
					got, end := stream(request(prefill, tt.maxTokens-k))
					if !slices.Equal(got, full[k:]) {
						t.Fatalf("continuation after %d deltas: %q\nwant the rest of the uninterrupted run: %q", k, got, full[k:])
					}
					if end.Delta.StopReason != fullEnd.Delta.StopReason || end.Usage.OutputTokens != tt.maxTokens-k {
						t.Errorf("message_delta %+v, want stop_reason %q and %d output tokens", end, fullEnd.Delta.StopReason, tt.maxTokens-k)
					}
				})
			}
		})
	}
}

// TestResponsesContinuation checks that a /v1/responses request whose
// input ends with the beginning of the answer, as an assistant output
// message (after a reasoning item when the model thought), gets the rest
// of that answer. Real Ollama 0.32.15 continued such an input as it did
// the Messages request above ("  + E f 59" after "sKM").
func TestResponsesContinuation(t *testing.T) {
	base, _ := start(t, ollamasim.New(resumeConfig()))
	tests := []struct {
		name      string
		model     string
		maxTokens int // 0: unset, the default length
	}{
		{"text", "llama3.2", 0},
		{"max_output_tokens", "llama3.2", 7},
		{"reasoning", "qwen3:8b", 0},
		{"reasoning max_output_tokens", "qwen3:8b", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			request := func(prefill string, maxTokens int) string {
				limit := ""
				if maxTokens > 0 {
					limit = fmt.Sprintf(`"max_output_tokens":%d,`, maxTokens)
				}
				return fmt.Sprintf(`{"model":%q,%s"stream":true,"input":[{"role":"user","content":"Hello there"}%s]}`, tt.model, limit, prefill)
			}
			stream := func(body string) []delta {
				t.Helper()
				r := do(t, base, "POST", "/v1/responses", body)
				if r.status != 200 {
					t.Fatalf("status %d, body %q", r.status, r.body)
				}
				var ds []delta
				evs := namedEvents(t, r.body)
				if evs[len(evs)-1].event != "response.completed" {
					t.Fatalf("stream %s did not end with response.completed", eventNames(evs))
				}
				type deltaEvent struct {
					Delta string `json:"delta"`
				}
				for _, e := range evs {
					switch e.event {
					case "response.output_text.delta":
						ds = append(ds, delta{"text", decodeJSON[deltaEvent](t, e.data).Delta})
					case "response.reasoning_summary_text.delta":
						ds = append(ds, delta{"thinking", decodeJSON[deltaEvent](t, e.data).Delta})
					}
				}
				return ds
			}
			full := stream(request("", tt.maxTokens))
			thinkingTokens := 0
			for _, d := range full {
				if d.kind == "thinking" {
					thinkingTokens++
				}
			}
			for _, k := range cuts(len(full), tt.maxTokens == 0, thinkingTokens) {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
					thinking, text := joined(full[:k])
					var items []string
					if thinking != "" {
						b, _ := json.Marshal(map[string]any{"type": "reasoning", "summary": []any{}, "encrypted_content": thinking})
						items = append(items, string(b))
					}
					if text != "" || thinking != "" {
						b, _ := json.Marshal(map[string]any{"type": "message", "role": "assistant", "content": []map[string]string{{"type": "output_text", "text": text}}})
						items = append(items, string(b))
					}
					prefill := ""
					if len(items) > 0 {
						prefill = "," + strings.Join(items, ",")
					}
					budget := 0
					if tt.maxTokens > 0 {
						budget = tt.maxTokens - k
					}
					got := stream(request(prefill, budget))
					if !slices.Equal(got, full[k:]) {
						t.Fatalf("continuation after %d deltas: %q\nwant the rest of the uninterrupted run: %q", k, got, full[k:])
					}
				})
			}
		})
	}
}
