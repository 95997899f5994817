package job

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
)

// A frame is what one data reply carries (docs/protocol.md): one NDJSON line
// with its newline, one server-sent event through its blank line, or a piece
// of any other body. Frames splits Ollama's responses that way; Payload and
// SSEEvent read and write the two streamed formats, so that no other code
// splits them by hand.

// maxPiece bounds a frame of a body that is neither NDJSON nor SSE.
const maxPiece = 256 << 10

// Frames splits a response body into the frames a worker relays: one NDJSON
// line (with its newline) at a time, one server-sent event (through its blank
// line) at a time, or, for any other content, pieces of up to 256 KiB. yield's
// error stops the split and is returned.
func Frames(body io.Reader, contentType string, yield func([]byte) error) error {
	mt, _, _ := mime.ParseMediaType(contentType)
	br := bufio.NewReader(body) // Lines longer than its 4 KiB grow as needed.
	switch mt {
	case "application/x-ndjson":
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				if yerr := yield(line); yerr != nil {
					return yerr
				}
			}
			if err != nil {
				return eof(err)
			}
		}
	case "text/event-stream":
		var ev []byte
		for {
			line, err := br.ReadBytes('\n')
			ev = append(ev, line...)
			if (bytes.Equal(line, []byte("\n")) || bytes.Equal(line, []byte("\r\n")) || err != nil) && len(ev) > 0 {
				if yerr := yield(ev); yerr != nil {
					return yerr
				}
				ev = nil
			}
			if err != nil {
				return eof(err)
			}
		}
	default:
		// Most such bodies are one small JSON object: grow each piece as it
		// fills rather than allocating the largest piece up front.
		for {
			var piece bytes.Buffer
			_, err := piece.ReadFrom(io.LimitReader(br, maxPiece))
			if piece.Len() > 0 {
				if yerr := yield(piece.Bytes()); yerr != nil {
					return yerr
				}
			}
			if err != nil {
				return err
			}
			if piece.Len() < maxPiece {
				return nil // The limit was not reached: the body ended.
			}
		}
	}
}

func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// Payload returns the JSON a frame carries: an NDJSON line without its
// newline, or the data of a server-sent event (its data: lines joined by
// newlines, as the SSE specification says; nil for an event without data).
// Any other frame is returned trimmed.
func Payload(frame []byte) []byte {
	t := bytes.TrimLeft(frame, " \t\r\n")
	if !isEvent(t) {
		return bytes.TrimSpace(t)
	}
	var data []byte
	seen := false
	for len(t) > 0 {
		var line []byte
		line, t, _ = bytes.Cut(t, []byte("\n"))
		v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
		if !ok {
			continue
		}
		if seen {
			data = append(data, '\n')
		}
		seen = true
		data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
	}
	return data
}

// isEvent tells a server-sent event from NDJSON by its first field name.
func isEvent(t []byte) bool {
	for _, f := range [][]byte{[]byte("data:"), []byte("event:"), []byte("id:"), []byte("retry:"), []byte(":")} {
		if bytes.HasPrefix(t, f) {
			return true
		}
	}
	return false
}

// SSEEvent frames data as one server-sent event, "data: <data>\n\n".
func SSEEvent(data []byte) []byte {
	ev := make([]byte, 0, len(data)+8)
	ev = append(ev, "data: "...)
	ev = append(ev, data...)
	return append(ev, '\n', '\n')
}

// SSEDone is the payload of the event that ends an OpenAI stream.
var SSEDone = []byte("[DONE]")

// EventName returns the event type of a server-sent event frame (its event:
// field), "" when it has none or the frame is not an event.
func EventName(frame []byte) string {
	t := bytes.TrimLeft(frame, " \t\r\n")
	if !isEvent(t) {
		return ""
	}
	for len(t) > 0 {
		var line []byte
		line, t, _ = bytes.Cut(t, []byte("\n"))
		if v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("event:")); ok {
			return string(bytes.TrimPrefix(v, []byte(" ")))
		}
		if len(bytes.TrimRight(line, "\r")) == 0 {
			break // The event's end.
		}
	}
	return ""
}

// SSENamedEvent frames data as one server-sent event of type event, as
// Ollama's Anthropic and Responses middleware write them:
// "event: <event>\ndata: <data>\n\n". An empty event is SSEEvent.
func SSENamedEvent(event string, data []byte) []byte {
	if event == "" {
		return SSEEvent(data)
	}
	ev := make([]byte, 0, len(event)+len(data)+16)
	ev = append(ev, "event: "...)
	ev = append(ev, event...)
	ev = append(ev, "\ndata: "...)
	ev = append(ev, data...)
	return append(ev, '\n', '\n')
}
