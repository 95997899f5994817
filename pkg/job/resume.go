package job

import (
	"bytes"
	"encoding/json"
)

// Transcript accumulates the text a requester has received in one reply
// stream: the answer and the thinking, read from Ollama's native NDJSON
// chunks (generate: response/thinking; chat: message.content/thinking) or
// OpenAI SSE chunks (choices[0].delta.content/reasoning). It is what a new
// worker needs to continue a half-streamed answer.
type Transcript struct {
	frames   int
	text     bytes.Buffer
	thinking bytes.Buffer
}

// Add takes one data frame of the reply.
func (t *Transcript) Add(frame []byte) {
	t.frames++
	line := Payload(frame)
	if len(line) == 0 || line[0] != '{' {
		return // [DONE], a comment, or not JSON.
	}
	var c struct {
		Response string `json:"response"`
		Thinking string `json:"thinking"`
		Message  *struct {
			Content  string `json:"content"`
			Thinking string `json:"thinking"`
		} `json:"message"`
		Choices []struct {
			Delta *struct {
				Content   string `json:"content"`
				Reasoning string `json:"reasoning"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if json.Unmarshal(line, &c) != nil {
		return
	}
	t.text.WriteString(c.Response)
	t.thinking.WriteString(c.Thinking)
	if c.Message != nil {
		t.text.WriteString(c.Message.Content)
		t.thinking.WriteString(c.Message.Thinking)
	}
	for _, ch := range c.Choices {
		if ch.Delta != nil {
			t.text.WriteString(ch.Delta.Content)
			t.thinking.WriteString(ch.Delta.Reasoning)
		}
	}
}

// Progress is a requester's answer to a worker that is about to run a job
// again after another worker died with it (docs/protocol.md, "Resuming").
type Progress struct {
	// Gone: the requester no longer wants the job; do not run it.
	Gone bool `json:"gone,omitempty"`
	// Frames is how many data messages of earlier attempts it has received
	// (and passed on); 0 means start from the beginning.
	Frames int `json:"frames"`
	// Attempt is the attempt the requester follows now; a worker whose
	// attempt is lower was superseded (its job was redelivered) and stops.
	Attempt int `json:"attempt,omitempty"`
	// Text and Thinking are the answer and the thinking received so far.
	Text     string `json:"text,omitempty"`
	Thinking string `json:"thinking,omitempty"`
}

// ResumeRequest is what a worker sends before running attempt Attempt, and,
// with Probe, every second while it runs a job whose requester said it
// answers (HeaderLive): is the requester still there, and still following
// this attempt? A probe changes nothing at the requester.
type ResumeRequest struct {
	Attempt int  `json:"attempt"`
	Probe   bool `json:"probe,omitempty"`
}

// Progress returns what the transcript holds, as the answer to a resume request.
func (t *Transcript) Progress() Progress {
	return Progress{Frames: t.frames, Text: t.text.String(), Thinking: t.thinking.String()}
}
