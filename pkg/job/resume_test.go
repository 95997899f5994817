package job

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// recorded returns the frames of a stream a real Ollama 0.32.15 sent
// (testdata/ollama-0.32.15, recorded with curl from the tiny test model).
func recorded(t *testing.T, name, contentType string) (body []byte, frames [][]byte) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "ollama-0.32.15", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := Frames(bytes.NewReader(body), contentType, func(b []byte) error {
		frames = append(frames, bytes.Clone(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return body, frames
}

// TestNamedEventsPassWhole: the Anthropic and Responses streams Ollama sends
// are split one named event a frame, and the frames are the body byte for
// byte, so the relay passes each event as Ollama wrote it.
func TestNamedEventsPassWhole(t *testing.T) {
	for _, name := range []string{"messages.sse", "responses.sse"} {
		t.Run(name, func(t *testing.T) {
			body, frames := recorded(t, name, "text/event-stream")
			if got := bytes.Join(frames, nil); !bytes.Equal(got, body) {
				t.Fatalf("frames do not add up to the body")
			}
			if len(frames) < 5 {
				t.Fatalf("%d frames, want one per event", len(frames))
			}
			for i, f := range frames {
				var data struct{ Type string }
				if err := json.Unmarshal(Payload(f), &data); err != nil {
					t.Fatalf("frame %d: %q: %v", i, f, err)
				}
				if EventName(f) == "" || EventName(f) != data.Type {
					t.Errorf("frame %d: event %q, data of type %q", i, EventName(f), data.Type)
				}
				if !bytes.Equal(SSENamedEvent(EventName(f), Payload(f)), f) {
					t.Errorf("frame %d: %q written back as %q", i, f, SSENamedEvent(EventName(f), Payload(f)))
				}
			}
		})
	}
}

func TestEventName(t *testing.T) {
	for frame, want := range map[string]string{
		"event: message_start\ndata: {}\n\n": "message_start",
		"event:x\r\ndata: {}\r\n\r\n":        "x",
		"data: {}\nevent: late\n\n":          "late",
		"data: {}\n\n":                       "",
		`{"event: no":1}` + "\n":             "",
		": comment\n\nevent: next\n\n":       "",
	} {
		if got := EventName([]byte(frame)); got != want {
			t.Errorf("EventName(%q) = %q, want %q", frame, got, want)
		}
	}
}

func TestTranscriptOfRecordedStreams(t *testing.T) {
	tests := []struct {
		file, contentType string
		text              string
		seam              *Seam
	}{
		{"chat.ndjson", "application/x-ndjson", "sKM  + E fD", nil},
		{"chat-completions.sse", "text/event-stream", "sKM  + E fD", &Seam{ID: "chatcmpl-358", Created: 1796138318, Ended: 1}},
		{"messages.sse", "text/event-stream", "sKM  + E fD", &Seam{ID: "msg_6ebde7d3f99676cdc9cd0b1a", Parts: []Part{{Type: "text", Len: 11}}, Ended: 1}},
		{"responses.sse", "text/event-stream", "sKM  + E fD", &Seam{ID: "resp_145440", Seq: 16,
			Parts: []Part{{Type: "message", ID: "msg_715110", Len: 11, Content: true, Ends: 2}}, Ended: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, frames := recorded(t, tt.file, tt.contentType)
			var tr Transcript
			tr.Start()
			for _, f := range frames {
				tr.Add(f)
			}
			p := tr.Progress()
			if p.Frames != len(frames) || p.Tokens != 8 || p.Text != tt.text || p.Thinking != "" || p.Unresumable != "" {
				t.Errorf("progress %+v, want %d frames, 8 tokens and the text %q", p, len(frames), tt.text)
			}
			if !reflect.DeepEqual(p.Seam, tt.seam) {
				t.Errorf("seam %+v, want %+v", p.Seam, tt.seam)
			}
			if p.Elapsed <= 0 || p.Generating < 0 || p.Generating > p.Elapsed {
				t.Errorf("elapsed %s, generating %s", p.Elapsed, p.Generating)
			}
		})
	}
}

func TestTranscriptEvents(t *testing.T) {
	ev := func(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }
	tests := []struct {
		name   string
		frames []string
		want   Progress
	}{
		{"anthropic thinking then text, cut in the text", []string{
			ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":0}}}`),
			ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`),
			ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}`),
			ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
			ev("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`),
			ev("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}`),
			ev("ping", `{"type":"ping"}`),
		}, Progress{Frames: 7, Tokens: 2, Text: "Hi", Thinking: "hm",
			Seam: &Seam{ID: "msg_1", Parts: []Part{{Type: "thinking", Len: 2}, {Type: "text", Len: 2}}, Open: true}}},
		{"responses reasoning open", []string{
			ev("response.created", `{"response":{"id":"resp_1","output":[],"usage":null},"sequence_number":0,"type":"response.created"}`),
			ev("response.in_progress", `{"response":{"id":"resp_1"},"sequence_number":1,"type":"response.in_progress"}`),
			ev("response.output_item.added", `{"item":{"id":"rs_1","summary":[],"type":"reasoning"},"output_index":0,"sequence_number":2,"type":"response.output_item.added"}`),
			ev("response.reasoning_summary_text.delta", `{"delta":"hm","item_id":"rs_1","output_index":0,"sequence_number":3,"summary_index":0,"type":"response.reasoning_summary_text.delta"}`),
		}, Progress{Frames: 4, Tokens: 1, Thinking: "hm",
			Seam: &Seam{ID: "resp_1", Seq: 4, Parts: []Part{{Type: "reasoning", ID: "rs_1", Len: 2}}, Open: true}}},
		{"native generate with thinking", []string{
			`{"model":"m","response":"","thinking":"a","done":false}` + "\n",
			`{"model":"m","response":"b","done":false}` + "\n",
			`{"model":"m","response":"","done":true,"eval_count":2}` + "\n",
		}, Progress{Frames: 3, Tokens: 2, Text: "b", Thinking: "a"}},
		{"chat completion reasoning", []string{
			"data: " + `{"id":"c1","created":5,"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"r"},"finish_reason":null}]}` + "\n\n",
			"data: " + `{"id":"c1","created":5,"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}` + "\n\n",
		}, Progress{Frames: 2, Tokens: 2, Text: "x", Thinking: "r", Seam: &Seam{ID: "c1", Created: 5}}},
		{"not JSON, a comment, [DONE]", []string{": keep-alive\n\n", "data: [DONE]\n\n", "garbage\n"},
			Progress{Frames: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Transcript
			for _, f := range tt.frames {
				tr.Add([]byte(f))
			}
			got := tr.Progress()
			got.Elapsed, got.Generating = 0, 0
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("progress\n got %+v %+v\nwant %+v %+v", got, got.Seam, tt.want, tt.want.Seam)
			}
		})
	}
}

// TestProgressOfAnOlderWorker: what an older requester sent (frames, text,
// thinking) still decodes, and what a newer one sends decodes in an older
// worker's Progress (unknown members are ignored).
func TestProgressCompatibility(t *testing.T) {
	var p Progress
	if err := json.Unmarshal([]byte(`{"frames":3,"text":"Hel","thinking":"hm"}`), &p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, Progress{Frames: 3, Text: "Hel", Thinking: "hm"}) {
		t.Errorf("older answer decoded as %+v", p)
	}
	var tr Transcript
	tr.Add([]byte("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"))
	b, _ := json.Marshal(tr.Progress())
	var old struct {
		Gone     bool   `json:"gone,omitempty"`
		Frames   int    `json:"frames"`
		Text     string `json:"text,omitempty"`
		Thinking string `json:"thinking,omitempty"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Frames != 1 || old.Text != "a" {
		t.Errorf("an older worker reads %s as %+v, %v", b, old, err)
	}
}

// FuzzTranscript: any frames, of any route, leave a bounded transcript whose
// answer to a resume request is small enough for one NATS message.
func FuzzTranscript(f *testing.F) {
	for _, name := range []string{"chat.ndjson", "chat-completions.sse", "messages.sse", "responses.sse"} {
		b, err := os.ReadFile(filepath.Join("testdata", "ollama-0.32.15", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(3))
	}
	f.Add([]byte(`{"message":{"content":[1],"tool_calls":[{}]},"choices":[{"delta":{"content":null}}]}`+"\n"), uint8(0))
	f.Add([]byte("event: x\ndata: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"text\"}}\n\n"), uint8(200))
	f.Fuzz(func(t *testing.T, body []byte, repeat uint8) {
		var tr Transcript
		for range int(repeat)%8 + 1 {
			_ = Frames(bytes.NewReader(body), "text/event-stream", func(b []byte) error { tr.Add(b); return nil })
			_ = Frames(bytes.NewReader(body), "application/x-ndjson", func(b []byte) error { tr.Add(b); return nil })
		}
		p := tr.Progress()
		if len(p.Text)+len(p.Thinking) > MaxResumeText {
			t.Fatalf("%d bytes of text kept", len(p.Text)+len(p.Thinking))
		}
		if p.Seam != nil {
			if len(p.Seam.Parts) > MaxResumeParts {
				t.Fatalf("%d parts kept", len(p.Seam.Parts))
			}
			n := 0
			for _, part := range p.Seam.Parts {
				n += part.Len
			}
			if n > len(p.Text)+len(p.Thinking) {
				t.Fatalf("parts hold %d bytes of %d", n, len(p.Text)+len(p.Thinking))
			}
		}
		if p.Unresumable != "" && (p.Text != "" || p.Seam != nil) {
			t.Fatalf("an unresumable answer keeps %q, %+v", p.Text, p.Seam)
		}
		if p.Tokens > p.Frames {
			t.Fatalf("%d tokens in %d frames", p.Tokens, p.Frames)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Fatalf("a resume answer of %d bytes", len(b))
		}
		if strings.Contains(string(b), `"gone"`) {
			t.Fatalf("a transcript says gone: %s", b)
		}
	})
}
