package job

import (
	"bytes"
	"strings"
	"testing"
)

func TestFrames(t *testing.T) {
	big := strings.Repeat("x", 2*maxPiece+10)
	tests := []struct {
		name, contentType, body string
		want                    []string
	}{
		{"ndjson lines", "application/x-ndjson", "{\"a\":1}\n{\"b\":2}\n", []string{"{\"a\":1}\n", "{\"b\":2}\n"}},
		{"ndjson no final newline", "application/x-ndjson", "{\"a\":1}\n{\"b\":2}", []string{"{\"a\":1}\n", "{\"b\":2}"}},
		{"long line", "application/x-ndjson", strings.Repeat("y", 100000) + "\n", []string{strings.Repeat("y", 100000) + "\n"}},
		{"sse events", "text/event-stream", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{"data: {\"a\":1}\n\n", "data: [DONE]\n\n"}},
		{"json body", "application/json; charset=utf-8", `{"model":"m","response":"hi"}`, []string{`{"model":"m","response":"hi"}`}},
		{"empty body", "application/json", "", nil},
		{"large body in pieces", "application/json", big, []string{big[:maxPiece], big[maxPiece : 2*maxPiece], big[2*maxPiece:]}},
		{"exact pieces", "application/json", big[:maxPiece], []string{big[:maxPiece]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := Frames(strings.NewReader(tt.body), tt.contentType, func(b []byte) error {
				got = append(got, string(bytes.Clone(b)))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d frames, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("frame %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got[i]), got[i], len(tt.want[i]), tt.want[i])
				}
			}
		})
	}
}

func TestPayload(t *testing.T) {
	tests := []struct{ name, frame, want string }{
		{"ndjson", "{\"a\":1}\n", `{"a":1}`},
		{"sse data", "data: {\"a\":1}\n\n", `{"a":1}`},
		{"sse no space", "data:{\"a\":1}\n\n", `{"a":1}`},
		{"sse done", "data: [DONE]\n\n", "[DONE]"},
		{"sse named event", "event: message_start\ndata: {\"t\":1}\n\n", `{"t":1}`},
		{"sse crlf", "data: x\r\n\r\n", "x"},
		{"sse two data lines", "data: a\ndata: b\n\n", "a\nb"},
		{"sse comment only", ": keep-alive\n\n", ""},
		{"json body", `{"response":"hi"}`, `{"response":"hi"}`},
	}
	for _, tt := range tests {
		if got := string(Payload([]byte(tt.frame))); got != tt.want {
			t.Errorf("%s: Payload(%q) = %q, want %q", tt.name, tt.frame, got, tt.want)
		}
	}
}

func TestSSEEventRoundTrip(t *testing.T) {
	ev := SSEEvent([]byte(`{"x":1}`))
	if string(ev) != "data: {\"x\":1}\n\n" {
		t.Fatalf("SSEEvent = %q", ev)
	}
	var got [][]byte
	if err := Frames(bytes.NewReader(append(ev, SSEEvent(SSEDone)...)), "text/event-stream", func(b []byte) error {
		got = append(got, Payload(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0]) != `{"x":1}` || !bytes.Equal(got[1], SSEDone) {
		t.Fatalf("frames = %q", got)
	}
}
