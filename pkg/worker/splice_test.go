package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The splice tests run Ollama's own stream converters (the ones its
// Anthropic and Responses middleware and its chat completions writer use)
// over a deterministic answer, cut the stream after every frame, run them
// again over the rest of the answer as a continuation (a fresh message or
// response: new ids, indexes and sequence numbers from 0, counts of the rest
// alone), splice it with what the transcript of the cut stream reports, and
// require the client's stream to equal the uninterrupted one, byte for byte
// but for the ids nobody had seen yet, times, and the prompt count, which is
// the continuation's (its prompt holds the partial answer).

const promptTokens = 11

// answer is a model's answer as Ollama's chat handler streams it: one chunk
// a token, thinking first, then a final chunk with the counts.
func answer(thinking, text []string, prompt int, at time.Time) []api.ChatResponse {
	var out []api.ChatResponse
	for _, th := range thinking {
		out = append(out, api.ChatResponse{Model: "m", CreatedAt: at, Message: api.Message{Role: "assistant", Thinking: th}})
	}
	for _, tx := range text {
		out = append(out, api.ChatResponse{Model: "m", CreatedAt: at, Message: api.Message{Role: "assistant", Content: tx}})
	}
	return append(out, api.ChatResponse{Model: "m", CreatedAt: at, Message: api.Message{Role: "assistant"}, Done: true,
		DoneReason: "stop", Metrics: api.Metrics{PromptEvalCount: prompt, EvalCount: len(thinking) + len(text),
			TotalDuration: 1000, LoadDuration: 5, PromptEvalDuration: 10, EvalDuration: 500}})
}

// rest is what a deterministic model continues with after tokens: the
// remaining chunks, counted as their own generation.
func rest(chunks []api.ChatResponse, tokens int, at time.Time) []api.ChatResponse {
	out := append([]api.ChatResponse(nil), chunks[tokens:]...)
	for i := range out {
		out[i].CreatedAt = at
	}
	done := &out[len(out)-1]
	done.Metrics.PromptEvalCount += tokens
	done.Metrics.EvalCount -= tokens
	return out
}

func sseOf(event string, data any) []byte {
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return job.SSENamedEvent(event, b)
}

// anthropicStream is what Ollama's Anthropic middleware sends for chunks.
func anthropicStream(id string, chunks []api.ChatResponse) [][]byte {
	c := anthropic.NewStreamConverter(id, "m", 3)
	var out [][]byte
	for _, ch := range chunks {
		for _, ev := range c.Process(ch) {
			out = append(out, sseOf(ev.Event, ev.Data))
		}
	}
	return out
}

// responsesStream is what Ollama's Responses middleware sends for chunks.
func responsesStream(respID, itemID string, chunks []api.ChatResponse) [][]byte {
	c := openai.NewResponsesStreamConverter(respID, itemID, "m", openai.ResponsesRequest{Model: "m"})
	var out [][]byte
	for _, ch := range chunks {
		for _, ev := range c.Process(ch) {
			out = append(out, sseOf(ev.Event, ev.Data))
		}
	}
	return out
}

// chatStream is what Ollama 0.32's chat completions writer sends for chunks
// (middleware/openai.go, ChatWriter.writeResponse), with include_usage.
func chatStream(id string, chunks []api.ChatResponse) [][]byte {
	var out [][]byte
	var created time.Time
	first := true
	data := func(v any) {
		b, _ := json.Marshal(v)
		out = append(out, job.SSEEvent(b))
	}
	for _, r := range chunks {
		if created.IsZero() {
			created = r.CreatedAt
		}
		r.CreatedAt = created
		empty := r.Done && !first && r.Message.Content == "" && r.Message.Thinking == ""
		if !empty {
			for _, c := range openai.ToStreamChunks(id, r, first) {
				data(c)
			}
			first = false
		}
		if r.Done {
			fin := openai.FinishChunk(id, r, false)
			data(fin)
			u := openai.ToUsage(r)
			fin.Usage, fin.Choices = &u, []openai.ChunkChoice{}
			data(fin)
			out = append(out, job.SSEEvent(job.SSEDone))
		}
	}
	return out
}

// nativeStream is /api/chat's NDJSON.
func nativeStream(chunks []api.ChatResponse) [][]byte {
	var out [][]byte
	for _, ch := range chunks {
		b, _ := json.Marshal(ch)
		out = append(out, append(b, '\n'))
	}
	return out
}

// progressOf is what a requester answers after receiving frames.
func progressOf(frames [][]byte) job.Progress {
	var tr job.Transcript
	tr.Start()
	for _, f := range frames {
		tr.Add(f)
	}
	return tr.Progress()
}

func spliceAll(sp splicer, frames [][]byte) [][]byte {
	if sp == nil {
		return frames
	}
	var out [][]byte
	for _, f := range frames {
		out = append(out, sp.frame(f)...)
	}
	return out
}

var (
	idPattern   = regexp.MustCompile(`"((?:resp|msg|rs|chatcmpl)[_-][A-Za-z0-9_]+)"`)
	timePattern = regexp.MustCompile(`"(created_at|completed_at)":("[^"]*"|\d+)`)
)

// comparable masks times, and names ids by order of first appearance, so
// that two streams compare equal when they use their ids alike.
func comparable(frames [][]byte) string {
	s := string(bytes.Join(frames, nil))
	s = timePattern.ReplaceAllString(s, `"$1":0`)
	seen := map[string]string{}
	return idPattern.ReplaceAllStringFunc(s, func(m string) string {
		if _, ok := seen[m]; !ok {
			seen[m] = fmt.Sprintf(`"id%d"`, len(seen))
		}
		return seen[m]
	})
}

// addInts adds d to every integer member named one of keys in a frame.
func addInts(frame []byte, d int64, keys ...string) []byte {
	for _, k := range keys {
		re := regexp.MustCompile(`"` + k + `":(\d+)`)
		frame = re.ReplaceAllFunc(frame, func(m []byte) []byte {
			n, _ := strconv.ParseInt(string(re.FindSubmatch(m)[1]), 10, 64)
			return []byte(`"` + k + `":` + strconv.FormatInt(n+d, 10))
		})
	}
	return frame
}

func TestSpliceMatchesAnUninterruptedStream(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0).UTC()
	t1 := t0.Add(7 * time.Second)
	answers := []struct {
		name           string
		thinking, text []string
	}{
		{"text", nil, []string{"Once", " upon", " a", " <time>", " &", "\n"}},
		{"thinking and text", []string{"Let", " me", " think"}, []string{"It", " is", " \"42\""}},
		{"thinking only", []string{"Hm", "m", "m"}, nil},
	}
	routes := []struct {
		route  string
		stream func(id string, chunks []api.ChatResponse) [][]byte
	}{
		{"/v1/messages", func(id string, c []api.ChatResponse) [][]byte { return anthropicStream("msg_"+id, c) }},
		{"/v1/responses", func(id string, c []api.ChatResponse) [][]byte { return responsesStream("resp_"+id, "msg_"+id, c) }},
		{"/v1/chat/completions", func(id string, c []api.ChatResponse) [][]byte { return chatStream("chatcmpl-"+id, c) }},
		{"/api/chat", func(id string, c []api.ChatResponse) [][]byte { return nativeStream(c) }},
	}
	for _, rt := range routes {
		for _, a := range answers {
			t.Run(rt.route+" "+a.name, func(t *testing.T) {
				chunks := answer(a.thinking, a.text, promptTokens, t0)
				whole := rt.stream("1", chunks)
				for k := 1; k < len(whole); k++ {
					p := progressOf(whole[:k])
					p.Frames = k
					if p.Unresumable != "" {
						t.Fatalf("cut after %d frames: unresumable: %s", k, p.Unresumable)
					}
					if p.Tokens > len(chunks)-1 {
						t.Fatalf("cut after %d frames: %d tokens, the answer has %d", k, p.Tokens, len(chunks)-1)
					}
					if want := strings.Join(a.text, ""); !strings.HasPrefix(want, p.Text) {
						t.Fatalf("cut after %d frames: text %q is no beginning of %q", k, p.Text, want)
					}
					if want := strings.Join(a.thinking, ""); !strings.HasPrefix(want, p.Thinking) {
						t.Fatalf("cut after %d frames: thinking %q is no beginning of %q", k, p.Thinking, want)
					}
					cont := rt.stream("2", rest(chunks, p.Tokens, t1))
					got := append(append([][]byte(nil), whole[:k]...), spliceAll(newSplicer(rt.route, p, nil), cont)...)
					// The prompt count is the continuation's, which read the partial answer.
					wantFrames := append([][]byte(nil), whole[:k]...)
					for _, f := range whole[k:] {
						d := int64(p.Tokens)
						f = addInts(f, d, "prompt_eval_count", "prompt_tokens", "total_tokens")
						f = addInts(f, int64(p.Elapsed), "total_duration")
						f = addInts(f, int64(p.Generating), "eval_duration")
						if !bytes.Contains(f, []byte("message_start")) {
							f = addInts(f, d, "input_tokens")
						}
						wantFrames = append(wantFrames, f)
					}
					if g, w := comparable(got), comparable(wantFrames); g != w {
						t.Fatalf("cut after %d frames (tokens %d, seam %+v):\n got %s\nwant %s", k, p.Tokens, p.Seam, g, w)
					}
				}
			})
		}
	}
}

// TestSpliceClosesTheOpenPart: a continuation that goes on with another part
// than the one the client has open (here the model stops thinking at once
// and answers, or says nothing more) closes it first, as Ollama would have.
func TestSpliceClosesTheOpenPart(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0).UTC()
	for _, tc := range []struct {
		route  string
		stream func(id string, c []api.ChatResponse) [][]byte
		cut    int // frames: the opening and the two thinking tokens
	}{
		{"/v1/messages", func(id string, c []api.ChatResponse) [][]byte { return anthropicStream("msg_"+id, c) }, 4},
		{"/v1/responses", func(id string, c []api.ChatResponse) [][]byte { return responsesStream("resp_"+id, "msg_"+id, c) }, 5},
	} {
		for _, text := range [][]string{{"x", "y"}, nil} {
			t.Run(fmt.Sprintf("%s then %q", tc.route, text), func(t *testing.T) {
				chunks := answer([]string{"a", "b"}, text, promptTokens, t0)
				whole := tc.stream("1", chunks)
				p := progressOf(whole[:tc.cut])
				p.Frames = tc.cut
				if p.Thinking != "ab" || p.Text != "" || p.Seam == nil || !p.Seam.Open {
					t.Fatalf("the cut is not inside the thinking: %+v", p)
				}
				cont := tc.stream("2", rest(chunks, 2, t0))
				got := append(append([][]byte(nil), whole[:tc.cut]...), spliceAll(newSplicer(tc.route, p, nil), cont)...)
				want := append([][]byte(nil), whole[:tc.cut]...)
				for _, f := range whole[tc.cut:] {
					if !bytes.Contains(f, []byte("message_start")) {
						f = addInts(f, 2, "input_tokens", "total_tokens")
					}
					want = append(want, f)
				}
				if g, w := comparable(got), comparable(want); g != w {
					t.Fatalf("\n got %s\nwant %s", g, w)
				}
			})
		}
	}
}

// TestSpliceOfAnOlderRequester: without the seam (a requester older than
// it), chat completions still lose the repeated role, and the native
// statistics stay the final attempt's.
func TestSpliceOfAnOlderRequester(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0).UTC()
	chunks := answer(nil, []string{"a", "b", "c"}, promptTokens, t0)
	p := job.Progress{Frames: 1, Text: "a"}
	cont := spliceAll(newSplicer("/v1/chat/completions", p, nil), chatStream("chatcmpl-2", rest(chunks, 1, t0)))
	if bytes.Contains(bytes.Join(cont, nil), []byte(`"role"`)) {
		t.Errorf("the continuation repeats the role:\n%s", bytes.Join(cont, nil))
	}
	if sp := newSplicer("/api/chat", p, nil); sp != nil {
		t.Errorf("a native continuation without token counts is spliced: %T", sp)
	}
}

func TestNativeSpliceStatistics(t *testing.T) {
	p := job.Progress{Frames: 4, Tokens: 3, Elapsed: 2 * time.Second, Generating: time.Second}
	line := []byte(`{"model":"m","created_at":"x","response":"","done":true,"done_reason":"stop","total_duration":500,"load_duration":7,"prompt_eval_count":20,"prompt_eval_duration":9,"eval_count":5,"eval_duration":100}` + "\n")
	got := spliceAll(newSplicer("/api/generate", p, nil), [][]byte{[]byte(`{"model":"m","response":"a","done":false}` + "\n"), line})
	want := `{"model":"m","response":"a","done":false}` + "\n" +
		`{"model":"m","created_at":"x","response":"","done":true,"done_reason":"stop","total_duration":2000000500,"load_duration":7,"prompt_eval_count":20,"prompt_eval_duration":9,"eval_count":8,"eval_duration":1000000100}` + "\n"
	if string(bytes.Join(got, nil)) != want {
		t.Errorf("got  %s\nwant %s", bytes.Join(got, nil), want)
	}
}

func TestTranscriptRefusesWhatCannotBeContinued(t *testing.T) {
	tests := []struct {
		name   string
		frames []string
		want   string
	}{
		{"anthropic tool use", []string{
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n",
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n",
		}, "it has tool calls"},
		{"responses function call", []string{
			"event: response.output_item.added\ndata: {\"item\":{\"id\":\"fc_1\",\"type\":\"function_call\"},\"output_index\":0,\"sequence_number\":2,\"type\":\"response.output_item.added\"}\n\n",
		}, "it has tool calls"},
		{"native tool calls", []string{
			`{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":false}` + "\n",
		}, "it has tool calls"},
		{"chat completion tool calls", []string{
			"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n",
		}, "it has tool calls"},
		{"too long", []string{
			`{"response":"` + strings.Repeat("x", job.MaxResumeText) + `","done":false}` + "\n",
			`{"response":"y","done":false}` + "\n",
		}, "it is longer than 128 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fr [][]byte
			for _, f := range tt.frames {
				fr = append(fr, []byte(f))
			}
			p := progressOf(fr)
			if p.Unresumable != tt.want || p.Text != "" || p.Seam != nil {
				t.Fatalf("progress %+v, want unresumable %q and nothing to continue", p, tt.want)
			}
			tk := &task{route: "/v1/messages", body: []byte(`{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}`)}
			if _, err := tk.continuation(t.Context(), p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("continuation: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestContinuationRequests(t *testing.T) {
	seam := &job.Seam{ID: "x"}
	tests := []struct {
		name, route, body string
		p                 job.Progress
		want              string // the rewritten request, keys sorted
		wantErr           string
	}{
		{"chat", "/api/chat",
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":10}}`,
			job.Progress{Frames: 5, Tokens: 4, Text: "Hel", Thinking: "hm"},
			`{"messages":[{"content":"hi","role":"user"},{"content":"Hel","role":"assistant","thinking":"hm"}],"model":"m","options":{"num_predict":6}}`, ""},
		{"chat of an older requester: frames count as tokens", "/api/chat",
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":10}}`,
			job.Progress{Frames: 3, Text: "Hel"},
			`{"messages":[{"content":"hi","role":"user"},{"content":"Hel","role":"assistant"}],"model":"m","options":{"num_predict":7}}`, ""},
		{"chat with a prefill", "/v1/chat/completions",
			`{"model":"m","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure: "}]}`,
			job.Progress{Frames: 9, Tokens: 5, Text: "yes", Thinking: "r"},
			`{"max_tokens":1,"messages":[{"content":"hi","role":"user"},{"content":"Sure: yes","reasoning":"r","role":"assistant"}],"model":"m","stream":true}`, ""},
		{"chat not streamed", "/api/chat", `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}`,
			job.Progress{Frames: 1, Text: "whole"}, "", "not streamed cannot be continued"},
		{"chat completions not streamed by default", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			job.Progress{Frames: 1, Text: "whole"}, "", "not streamed cannot be continued"},
		{"messages", "/v1/messages",
			`{"model":"m","max_tokens":10,"stream":true,"system":"be brief","messages":[{"role":"user","content":"hi"}]}`,
			job.Progress{Frames: 9, Tokens: 4, Text: "Hel", Thinking: "hm", Seam: seam},
			`{"max_tokens":6,"messages":[{"content":"hi","role":"user"},{"content":[{"thinking":"hm","type":"thinking"},{"text":"Hel","type":"text"}],"role":"assistant"}],"model":"m","stream":true,"system":"be brief"}`, ""},
		{"messages with a prefill", "/v1/messages",
			`{"model":"m","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure: "}]}`,
			job.Progress{Frames: 9, Tokens: 4, Text: "yes", Seam: seam},
			`{"max_tokens":1,"messages":[{"content":"hi","role":"user"},{"content":[{"text":"Sure: ","type":"text"},{"text":"yes","type":"text"}],"role":"assistant"}],"model":"m","stream":true}`, ""},
		{"messages of an older requester", "/v1/messages",
			`{"model":"m","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			job.Progress{Frames: 9, Text: "yes"}, "", "did not say where its stream stands"},
		{"messages not streamed", "/v1/messages",
			`{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`,
			job.Progress{Frames: 1, Seam: seam}, "", "not streamed cannot be continued"},
		{"responses of a string", "/v1/responses",
			`{"model":"m","stream":true,"instructions":"be brief","input":"hi","max_output_tokens":8}`,
			job.Progress{Frames: 9, Tokens: 4, Text: "Hel", Thinking: "hm", Seam: seam},
			`{"input":[{"content":"hi","role":"user","type":"message"},{"encrypted_content":"hm","summary":[],"type":"reasoning"},{"content":[{"text":"Hel","type":"output_text"}],"role":"assistant","type":"message"}],"instructions":"be brief","max_output_tokens":4,"model":"m","stream":true}`, ""},
		{"responses of an empty string, thinking only", "/v1/responses",
			`{"model":"m","stream":true,"input":""}`,
			job.Progress{Frames: 4, Tokens: 1, Thinking: "hm", Seam: seam},
			`{"input":[{"encrypted_content":"hm","summary":[],"type":"reasoning"}],"model":"m","stream":true}`, ""},
		{"responses of items with a prefill", "/v1/responses",
			`{"model":"m","stream":true,"input":[{"role":"user","content":"hi"},{"type":"message","role":"assistant","content":"Sure: "}]}`,
			job.Progress{Frames: 9, Tokens: 4, Text: "yes", Seam: seam},
			`{"input":[{"content":"hi","role":"user"},{"content":[{"text":"Sure: ","type":"output_text"},{"text":"yes","type":"output_text"}],"role":"assistant","type":"message"}],"model":"m","stream":true}`, ""},
		{"responses not streamed", "/v1/responses", `{"model":"m","input":"hi"}`,
			job.Progress{Frames: 1, Seam: seam}, "", "not streamed cannot be continued"},
		{"responses of an older requester", "/v1/responses", `{"model":"m","stream":true,"input":"hi"}`,
			job.Progress{Frames: 3, Text: "x"}, "", "did not say where its stream stands"},
		{"completions", "/v1/completions", `{"model":"m","stream":true,"prompt":"hi"}`,
			job.Progress{Frames: 3, Text: "x"}, "", "cannot be continued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := &task{route: tt.route, body: []byte(tt.body)}
			got, err := tk.continuation(t.Context(), tt.p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("continuation: %s, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatal(err)
			}
			sorted, _ := json.Marshal(v)
			if string(sorted) != tt.want {
				t.Errorf("continuation\n got %s\nwant %s", sorted, tt.want)
			}
		})
	}
}

// FuzzSplice: whatever a requester reports (its answer is untrusted input to
// the worker) and whatever the continuation's bytes, a splicer never panics
// and hands on only whole frames: non-empty, and on the SSE routes events
// that end with their blank line.
func FuzzSplice(f *testing.F) {
	routes := []string{"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/messages", "/v1/responses"}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	chunks := answer([]string{"a", "b"}, []string{"x", "y"}, promptTokens, t0)
	for i, stream := range [][][]byte{nativeStream(chunks), nativeStream(chunks), chatStream("chatcmpl-1", chunks),
		anthropicStream("msg_1", chunks), responsesStream("resp_1", "msg_1", chunks)} {
		p, _ := json.Marshal(progressOf(stream[:3]))
		f.Add(uint8(i), p, bytes.Join(stream, nil))
	}
	f.Add(uint8(3), []byte(`{"frames":2,"tokens":1,"seam":{"parts":[{"type":"text","len":-5}],"open":true}}`),
		[]byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":99999999999,\"content_block\":{\"type\":\"text\"}}\n\n"))
	f.Add(uint8(4), []byte(`{"frames":2,"seam":{"seq":-3,"parts":[{"type":"message","ends":9}],"open":true,"ended":1}}`),
		[]byte("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"output_tokens\":\"x\"}},\"sequence_number\":1}\n\n"))
	f.Fuzz(func(t *testing.T, i uint8, progress, body []byte) {
		route := routes[int(i)%len(routes)]
		var p job.Progress
		_ = json.Unmarshal(progress, &p) // Anything: what does not decode is zero.
		sp := newSplicer(route, p, []byte(`{"max_output_tokens":5}`))
		if sp == nil {
			return
		}
		ct := "text/event-stream"
		if strings.HasPrefix(route, "/api/") {
			ct = "application/x-ndjson"
		}
		err := job.Frames(bytes.NewReader(body), ct, func(b []byte) error {
			for _, out := range sp.frame(b) {
				if len(out) == 0 {
					t.Fatalf("an empty frame from %q", b)
				}
				if ct == "text/event-stream" && bytes.HasSuffix(b, []byte("\n\n")) && !bytes.HasSuffix(out, []byte("\n\n")) {
					t.Fatalf("frame %q spliced into %q, not a whole event", b, out)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
