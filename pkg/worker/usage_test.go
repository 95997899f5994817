package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
)

func TestUsageOf(t *testing.T) {
	tests := []struct {
		name   string
		sc     schema
		frame  string
		want   counts
		wantOK bool
	}{
		{"generate final line", nativeCounts,
			`{"model":"m","response":"","done":true,"prompt_eval_count":12,"prompt_eval_duration":5,"eval_count":24,"eval_duration":480000000}` + "\n",
			counts{12, 24, 480000000}, true},
		{"chat final line, keys in another order", nativeCounts,
			`{"eval_count":3,"message":{"role":"assistant","content":""},"done":true,"prompt_eval_count":7}` + "\n", counts{7, 3, 0}, true},
		{"embed", nativeCounts, `{"model":"m","embeddings":[[0.1,-2e-3]],"total_duration":1,"prompt_eval_count":4}`, counts{4, 0, 0}, true},
		{"no prompt count", nativeCounts, `{"done":true,"eval_count":5}`, counts{0, 5, 0}, true},
		{"a chunk before the end", nativeCounts, `{"response":"eval_count","done":false}` + "\n", counts{}, false},
		{"a count in a string", nativeCounts, `{"response":"\"eval_count\":99","done":true}`, counts{}, false},
		{"a count in a nested object", nativeCounts,
			`{"message":{"tool_calls":[{"function":{"arguments":{"eval_count":99,"prompt_eval_count":98}}}]},"done":true}`, counts{}, false},
		{"nested and top-level", nativeCounts, `{"message":{"eval_count":99},"eval_count":2}`, counts{0, 2, 0}, true},
		{"negative", nativeCounts, `{"eval_count":-1}`, counts{}, false},
		{"fraction", nativeCounts, `{"eval_count":1.5}`, counts{}, false},
		{"exponent", nativeCounts, `{"eval_count":1e3}`, counts{}, false},
		{"more than a reply may carry", nativeCounts, `{"eval_count":1073741825}`, counts{}, false},
		{"huge number", nativeCounts, `{"eval_count":123456789012345678901234567890}`, counts{}, false},
		{"the limit", nativeCounts, `{"eval_count":1073741824}`, counts{0, 1 << 30, 0}, true},
		{"escaped key", nativeCounts, `{"eval\u005fcount":5}`, counts{}, false},
		{"native counts on an OpenAI route", openAICounts, `{"eval_count":5,"prompt_eval_count":2}`, counts{}, false},
		{"openai chat", openAICounts,
			`{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}` + "\n",
			counts{9, 4, 0}, true},
		{"openai usage chunk", openAICounts,
			"data: " + `{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}` + "\n\n",
			counts{9, 4, 0}, true},
		{"openai embeddings", openAICounts, `{"object":"list","data":[{"embedding":[0.5]}],"usage":{"prompt_tokens":6,"total_tokens":6}}`, counts{6, 0, 0}, true},
		{"openai chunk", openAICounts, "data: " + `{"choices":[{"delta":{"content":"usage"}}]}` + "\n\n", counts{}, false},
		{"usage counts at the top", openAICounts, `{"usage":null,"prompt_tokens":3}`, counts{}, false},
		{"usage counts deeper", openAICounts, `{"usage":{"details":{"prompt_tokens":3}}}`, counts{}, false},
		{"usage not an object", openAICounts, `{"usage":[{"prompt_tokens":3}]}`, counts{}, false},
		{"usage in a choice", openAICounts, `{"choices":[{"usage":{"prompt_tokens":3}}]}`, counts{}, false},
		{"done event", openAICounts, "data: [DONE]\n\n", counts{}, false},
		{"not JSON", nativeCounts, "eval_count\": 5", counts{}, false},
		{"anthropic message", inputOutputCounts,
			`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"sKM"}],"stop_reason":"max_tokens","usage":{"input_tokens":20,"output_tokens":8}}`,
			counts{20, 8, 0}, true},
		{"anthropic message_start: an estimate, not counted", inputOutputCounts,
			"event: message_start\ndata: " + `{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":1,"output_tokens":0}}}` + "\n\n",
			counts{}, false},
		{"anthropic message_delta", inputOutputCounts,
			"event: message_delta\ndata: " + `{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":34,"output_tokens":5}}` + "\n\n",
			counts{34, 5, 0}, true},
		{"responses body", inputOutputCounts,
			`{"id":"resp_1","object":"response","max_output_tokens":4,"usage":{"input_tokens":20,"output_tokens":4,"total_tokens":24,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}}`,
			counts{20, 4, 0}, true},
		{"responses created: usage null", inputOutputCounts,
			"event: response.created\ndata: " + `{"response":{"id":"resp_1","max_output_tokens":4,"output":[],"usage":null},"sequence_number":0,"type":"response.created"}` + "\n\n",
			counts{}, false},
		{"responses completed", inputOutputCounts,
			"event: response.completed\ndata: " + `{"response":{"id":"resp_1","output":[{"content":[{"text":"\"usage\":{\"input_tokens\":9}","type":"output_text"}]}],"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":24}},"sequence_number":11,"type":"response.completed"}` + "\n\n",
			counts{20, 4, 0}, true},
		{"counts deeper in the response", inputOutputCounts, `{"response":{"output":[{"usage":{"input_tokens":3}}]}}`, counts{}, false},
		{"a response member not at the top", inputOutputCounts, `{"item":{"response":{"usage":{"input_tokens":3}}}}`, counts{}, false},
		{"chat counts on a Responses route", inputOutputCounts, `{"usage":{"prompt_tokens":3,"completion_tokens":1}}`, counts{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := usageOf([]byte(tt.frame), tt.sc)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("usageOf(%s) = %+v, %v; want %+v, %v", tt.frame, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestUsageMeterReadsABodyInPieces: a non-streamed answer is relayed in
// pieces of 256 KiB; its counts, at the end, are read across all of them.
func TestUsageMeterReadsABodyInPieces(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"model":"e","embeddings":[`)
	for i := range 100_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `[%d.125,"prompt_eval_count",{"prompt_eval_count":1}]`, i)
	}
	b.WriteString(`],"total_duration":5,"prompt_eval_count":42}`)
	m := newUsageMeter(nativeCounts, "application/json; charset=utf-8")
	pieces := 0
	if err := job.Frames(bytes.NewReader(b.Bytes()), "application/json; charset=utf-8", func(p []byte) error {
		pieces++
		if m.frame(p) {
			t.Error("a piece of a whole body reported counts on its own")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pieces < 2 {
		t.Fatalf("the body came in %d piece; the test needs several", pieces)
	}
	if got, ok := m.result(); !ok || got != (counts{prompt: 42}) {
		t.Errorf("counts %+v, %v; want 42 prompt tokens", got, ok)
	}
}

// TestUsageMeterStreamedTakesTheLastReport: on a streamed /v1/completions
// with include_usage, Ollama puts a zeroed usage on every chunk; the real
// one comes last.
func TestUsageMeterStreamedTakesTheLastReport(t *testing.T) {
	m := newUsageMeter(openAICounts, "text/event-stream")
	for _, ev := range []string{
		`{"choices":[{"text":"a"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`,
		`{"choices":[{"text":"b"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`,
		`{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
		`[DONE]`,
	} {
		m.frame(job.SSEEvent([]byte(ev)))
	}
	if got, ok := m.result(); !ok || got != (counts{prompt: 5, completion: 2}) {
		t.Errorf("counts %+v, %v; want 5 and 2", got, ok)
	}
	if _, ok := newUsageMeter(nativeCounts, "application/x-ndjson").result(); ok {
		t.Error("a meter that read nothing has counts")
	}
}

// TestCountScannerPieces: however the bytes are cut, the counts are the same.
func TestCountScannerPieces(t *testing.T) {
	doc := `{"a":"x\"y\\","b":[1,{"eval_count":7}],"prompt_eval_count" : 31 ,"usage":{"prompt_tokens":8,"completion_tokens":9},"eval_count":12,"eval_duration":600,"response":{"usage":{"input_tokens":3,"output_tokens":4}}}`
	for _, api := range []schema{nativeCounts, openAICounts, inputOutputCounts} {
		var whole countScanner
		_, _ = whole.Write([]byte(doc))
		want, wantOK := whole.counts(api)
		if !wantOK {
			t.Fatalf("api %d: no counts in %s", api, doc)
		}
		for i := range len(doc) + 1 {
			for j := i; j <= len(doc); j++ {
				var s countScanner
				for _, p := range []string{doc[:i], doc[i:j], doc[j:]} {
					_, _ = s.Write([]byte(p))
				}
				if got, ok := s.counts(api); got != want || ok != wantOK {
					t.Fatalf("api %d, cut at %d and %d: %+v, %v; want %+v", api, i, j, got, ok, want)
				}
			}
		}
	}
}

func TestAskForUsage(t *testing.T) {
	tests := []struct {
		name, route, body string
		wantAdded         bool
		wantOptions       string // stream_options of the rewritten body
	}{
		{"streamed chat", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"<hi>"}],"stream":true}`, true, `{"include_usage":true}`},
		{"client said no", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":false,"other":1}}`, true, `{"include_usage":true,"other":1}`},
		{"null options", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":null}`, true, `{"include_usage":true}`},
		{"client asked", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, false, ""},
		{"not streamed", "/v1/chat/completions", `{"model":"m","messages":[]}`, false, ""},
		{"stream false", "/v1/chat/completions", `{"model":"m","stream":false}`, false, ""},
		{"stream not a bool", "/v1/chat/completions", `{"model":"m","stream":"yes"}`, false, ""},
		{"options not an object", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":"all"}`, false, ""},
		{"include_usage not a bool", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":"yes"}}`, false, ""},
		{"include_usage null", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":null}}`, true, `{"include_usage":true}`},
		{"not JSON", "/v1/chat/completions", `{"model":`, false, ""},
		{"legacy completions", "/v1/completions", `{"model":"m","prompt":"p","stream":true}`, false, ""},
		{"native chat", "/api/chat", `{"model":"m","messages":[]}`, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, added := askForUsage(tt.route, []byte(tt.body))
			if added != tt.wantAdded {
				t.Fatalf("added = %v, want %v (%s)", added, tt.wantAdded, got)
			}
			if !added {
				if string(got) != tt.body {
					t.Errorf("body changed to %s", got)
				}
				return
			}
			var before, after map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tt.body), &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &after); err != nil {
				t.Fatalf("rewritten body %s: %v", got, err)
			}
			if string(after["stream_options"]) != tt.wantOptions {
				t.Errorf("stream_options %s, want %s", after["stream_options"], tt.wantOptions)
			}
			delete(before, "stream_options")
			delete(after, "stream_options")
			b1, _ := json.Marshal(before)
			b2, _ := json.Marshal(after)
			if !bytes.Equal(b1, b2) {
				t.Errorf("the rest of the request changed:\n got %s\nwant %s", b2, b1)
			}
		})
	}
}

// TestAskForUsageAfterContinuation: a continued streamed chat gets both
// rewrites, the partial answer and the usage request.
func TestAskForUsageAfterContinuation(t *testing.T) {
	tk := &task{route: "/v1/chat/completions",
		body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":10}`)}
	cont, err := tk.continuation(t.Context(), job.Progress{Frames: 3, Text: "Hel"})
	if err != nil {
		t.Fatal(err)
	}
	body, added := askForUsage(tk.route, cont)
	if !added {
		t.Fatalf("no usage asked for in %s", body)
	}
	var req struct {
		Messages []struct {
			Role, Content string
		}
		MaxTokens     int `json:"max_tokens"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	if len(req.Messages) != 2 || req.Messages[1].Role != "assistant" || req.Messages[1].Content != "Hel" ||
		req.MaxTokens != 7 || !req.StreamOptions.IncludeUsage {
		t.Errorf("request %s: want the partial answer, max_tokens 7 and include_usage", body)
	}
}

func TestUsageOnlyChunk(t *testing.T) {
	tests := []struct {
		name, payload string
		want          bool
	}{
		{"usage chunk", `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp_ollama","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, true},
		{"final content chunk", `{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}`, false},
		{"a chunk with usage and a choice", `{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":0}}`, false},
		{"no choices member", `{"usage":{"prompt_tokens":1}}`, false},
		{"null usage", `{"choices":[],"usage":null}`, false},
		{"no usage", `{"choices":[]}`, false},
		{"done", `[DONE]`, false},
		{"usage in the text", `{"choices":[{"delta":{"content":"\"usage\""}}]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := usageOnlyChunk(job.SSEEvent([]byte(tt.payload))); got != tt.want {
				t.Errorf("usageOnlyChunk(%s) = %v, want %v", tt.payload, got, tt.want)
			}
		})
	}
}

// FuzzCountScanner: on any bytes, cut anywhere, the scanner reports the
// same counts as on the whole, and only counts a reply may carry.
func FuzzCountScanner(f *testing.F) {
	f.Add([]byte(`{"prompt_eval_count":12,"eval_count":24,"eval_duration":480000000}`), uint16(10), uint16(30))
	f.Add([]byte(`{"usage":{"prompt_tokens":9,"completion_tokens":4}}`), uint16(3), uint16(3))
	f.Add([]byte(`{"a":"\\\"","usage":{"x":[{"prompt_tokens":1}]},"eval_count":-0}`), uint16(7), uint16(40))
	f.Add([]byte(`data: {"choices":[],"usage":{"prompt_tokens":1}}`+"\n\n"), uint16(0), uint16(5))
	f.Add([]byte(`}}]]{"eval_count":"5":6,"eval_count"::7`), uint16(2), uint16(9))
	f.Add([]byte(`{"response":{"usage":{"input_tokens":20,"output_tokens":4}},"usage":{"output_tokens":1}}`), uint16(4), uint16(50))
	f.Add([]byte(`{"type":"message_delta","usage":{"input_tokens":34,"output_tokens":5}}`), uint16(1), uint16(60))
	f.Fuzz(func(t *testing.T, data []byte, i, j uint16) {
		a, b := min(int(i), len(data)), min(int(j), len(data))
		if a > b {
			a, b = b, a
		}
		for _, api := range []schema{nativeCounts, openAICounts, inputOutputCounts} {
			var whole, cut countScanner
			_, _ = whole.Write(data)
			_, _ = cut.Write(data[:a])
			_, _ = cut.Write(data[a:b])
			_, _ = cut.Write(data[b:])
			w, wok := whole.counts(api)
			c, cok := cut.counts(api)
			if w != c || wok != cok {
				t.Fatalf("api %d: whole %+v %v, cut at %d, %d: %+v %v", api, w, wok, a, b, c, cok)
			}
			if w.prompt < 0 || w.prompt > maxCount || w.completion < 0 || w.completion > maxCount || w.evalDuration < 0 {
				t.Fatalf("api %d: counts out of range: %+v", api, w)
			}
			if !wok && w != (counts{}) {
				t.Fatalf("api %d: counts %+v without ok", api, w)
			}
			if wok && !strings.Contains(string(data), "_count") && !strings.Contains(string(data), "_tokens") {
				t.Fatalf("api %d: counts %+v from %q, which names none", api, w, data)
			}
		}
	})
}
