package streamcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The streams a real Ollama 0.32.15 sent (recorded for pkg/job's tests).
var recorded = map[string]string{
	"/api/chat":            "chat.ndjson",
	"/v1/chat/completions": "chat-completions.sse",
	"/v1/messages":         "messages.sse",
	"/v1/responses":        "responses.sse",
}

func read(t *testing.T, route string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "pkg", "job", "testdata", "ollama-0.32.15", recorded[route]))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadsOllamasStreams(t *testing.T) {
	for route := range recorded {
		t.Run(route, func(t *testing.T) {
			a, err := Read(route, []byte(read(t, route)))
			if err != nil {
				t.Fatal(err)
			}
			if a.Text != "sKM  + E fD" || a.Thinking != "" {
				t.Errorf("text %q, thinking %q", a.Text, a.Thinking)
			}
			for _, e := range a.Events {
				if strings.Contains(e, "resp_") || strings.Contains(e, "msg_") || strings.Contains(e, "chatcmpl-") || strings.Contains(e, "17961") {
					t.Errorf("a volatile value left in %s", e)
				}
			}
		})
	}
}

// TestFindsBrokenStreams: each way a splice could go wrong is caught.
func TestFindsBrokenStreams(t *testing.T) {
	tests := []struct {
		name, route string
		edit        func(string) string
		want        string
	}{
		{"native: two ends", "/api/chat", func(s string) string {
			lines := strings.SplitAfter(s, "\n")
			return s + lines[len(lines)-2]
		}, "done"},
		{"chat: the role again", "/v1/chat/completions", func(s string) string {
			return strings.Replace(s, `"delta":{"content":"K"}`, `"delta":{"role":"assistant","content":"K"}`, 1)
		}, "role"},
		{"chat: another id", "/v1/chat/completions", func(s string) string {
			return strings.Replace(s, `"id":"chatcmpl-358","object":"chat.completion.chunk","created":1796138318,"model":"tiny","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"content":"K"}`,
				`"id":"chatcmpl-9","object":"chat.completion.chunk","created":1796138318,"model":"tiny","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"content":"K"}`, 1)
		}, "id"},
		{"chat: no [DONE]", "/v1/chat/completions", func(s string) string { return strings.TrimSuffix(s, "data: [DONE]\n\n") }, "[DONE]"},
		{"messages: a second message_start", "/v1/messages", func(s string) string {
			i := strings.Index(s, "event: content_block_delta")
			return s[:i] + s[:strings.Index(s, "event: content_block_start")] + s[i:]
		}, "message_start"},
		{"messages: an index gap", "/v1/messages", func(s string) string {
			return strings.ReplaceAll(s, `"index":0`, `"index":1`)
		}, "block 1"},
		{"messages: no message_stop", "/v1/messages", func(s string) string {
			return s[:strings.Index(s, "event: message_stop")]
		}, "message_stop"},
		{"responses: a sequence gap", "/v1/responses", func(s string) string {
			return strings.Replace(s, `"sequence_number":5,`, `"sequence_number":6,`, 1)
		}, "sequence_number"},
		{"responses: done text differs", "/v1/responses", func(s string) string {
			return strings.Replace(s, `"text":"sKM  + E fD","type":"response.output_text.done"`, `"text":"sKM","type":"response.output_text.done"`, 1)
		}, "the deltas"},
		{"responses: another item id", "/v1/responses", func(s string) string {
			i := strings.LastIndex(s, "event: response.output_text.delta")
			return s[:i] + strings.Replace(s[i:], `"item_id":"msg_`, `"item_id":"msg_9`, 1)
		}, "item_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := read(t, tt.route)
			broken := tt.edit(orig)
			if broken == orig {
				t.Fatal("the edit changed nothing")
			}
			if _, err := Read(tt.route, []byte(broken)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read: %v, want an error about %q", err, tt.want)
			}
		})
	}
}
