package clients_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// newAnthropic returns Anthropic's SDK client for the Messages API under
// base, as Claude Code points it at Ollama (ANTHROPIC_BASE_URL).
func newAnthropic(base string, opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base),
		option.WithAPIKey("ollama"), // Ollama ignores it; the SDK wants one.
		option.WithMaxRetries(0),    // A retry would hide a failed first answer.
	}, opts...)...)
}

// text joins a message's text blocks.
func text(m *anthropic.Message) string {
	var b strings.Builder
	for _, c := range m.Content {
		b.WriteString(c.Text)
	}
	return b.String()
}

func TestAnthropicGoSDK(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testAnthropicGoSDK(t, m.Auth) })
	}
}

func testAnthropicGoSDK(t *testing.T, auth bool) {
	f := startFleet(t, fleettest.Options{Auth: auth})
	rec := &recorder{}
	via := newAnthropic(f.URL, option.WithHTTPClient(&http.Client{Transport: rec}))
	direct := newAnthropic(f.SimURLs[0].String()) // The same simulator and seed: the reference answer.
	params := anthropic.MessageNewParams{
		Model:     chatModel,
		MaxTokens: 40,
		System:    []anthropic.TextBlockParam{{Text: "Answer briefly."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Why is the sky blue?"))},
	}
	want, err := direct.Messages.New(t.Context(), params)
	if err != nil {
		t.Fatalf("messages with the simulator directly: %v", err)
	}
	if text(want) == "" || want.Usage.OutputTokens == 0 {
		t.Fatalf("the simulator's reference answer is unusable: %s", want.RawJSON())
	}

	t.Run("create", func(t *testing.T) {
		got, err := via.Messages.New(t.Context(), params)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		if text(got) != text(want) || got.StopReason != want.StopReason || got.Role != "assistant" {
			t.Errorf("answer %q, stop %q, role %q; want the simulator's %q, %q", text(got), got.StopReason, got.Role, text(want), want.StopReason)
		}
		if got.Usage.InputTokens != want.Usage.InputTokens || got.Usage.OutputTokens != want.Usage.OutputTokens {
			t.Errorf("usage %d in, %d out; want the simulator's %d, %d", got.Usage.InputTokens, got.Usage.OutputTokens, want.Usage.InputTokens, want.Usage.OutputTokens)
		}
		if !strings.HasPrefix(got.ID, "msg_") || string(got.Model) != string(want.Model) {
			t.Errorf("id %q, model %q", got.ID, got.Model)
		}
	})

	t.Run("stream", func(t *testing.T) {
		stream := via.Messages.NewStreaming(t.Context(), params)
		defer stream.Close()
		var msg anthropic.Message
		events := 0
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatalf("the SDK cannot accumulate event %d: %v\nraw: %s", events, err, rec.last())
			}
			events++
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v\nraw: %s", err, rec.last())
		}
		if raw := rec.last(); !strings.HasSuffix(raw, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
			t.Errorf("the stream does not end with message_stop: %q", tail(raw, 200))
		}
		if h := rec.header(); h.Get("Cache-Control") != "no-cache" || h.Get("Content-Type") != "text/event-stream" {
			t.Errorf("stream headers %v, want Ollama's Cache-Control: no-cache and Content-Type: text/event-stream", h)
		}
		if text(&msg) != text(want) || msg.StopReason != want.StopReason || events < 5 {
			t.Errorf("streamed %q (stop %q) in %d events; want the simulator's %q, %q", text(&msg), msg.StopReason, events, text(want), want.StopReason)
		}
		if msg.Usage.OutputTokens != want.Usage.OutputTokens || msg.Usage.InputTokens != want.Usage.InputTokens {
			t.Errorf("streamed usage %d in, %d out; want %d, %d", msg.Usage.InputTokens, msg.Usage.OutputTokens, want.Usage.InputTokens, want.Usage.OutputTokens)
		}
	})

	t.Run("errors", func(t *testing.T) {
		unknown := params
		unknown.Model = "no-such-model"
		noTokens := params
		noTokens.MaxTokens = -1
		for _, tc := range []struct {
			name   string
			params anthropic.MessageNewParams
			status int
			typ    string
		}{
			{"unknown model", unknown, http.StatusNotFound, "not_found_error"},
			{"bad max_tokens", noTokens, http.StatusBadRequest, "invalid_request_error"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := via.Messages.New(t.Context(), tc.params)
				_, wantErr := direct.Messages.New(t.Context(), tc.params)
				got, w := anthropicError(t, err), anthropicError(t, wantErr)
				if got.StatusCode != tc.status || string(got.Type()) != tc.typ {
					t.Errorf("got %d %q, want %d %q", got.StatusCode, got.Type(), tc.status, tc.typ)
				}
				if got.StatusCode != w.StatusCode || got.Type() != w.Type() || got.Message != w.Message {
					t.Errorf("got %d %q %q, the simulator answers %d %q %q", got.StatusCode, got.Type(), got.Message, w.StatusCode, w.Type(), w.Message)
				}
			})
		}
	})
}

// TestAnthropicGoSDKStreamSurvivesAWorkerKill: the SDK's accumulator, which
// refuses a block index out of order, takes a stream continued by another
// worker, and ends with the answer an uninterrupted run gives.
func TestAnthropicGoSDKStreamSurvivesAWorkerKill(t *testing.T) {
	f := slowFleet(t)
	params := anthropic.MessageNewParams{
		Model:     "qwen3",
		MaxTokens: 60,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Tell me a story"))},
	}
	direct, via := newAnthropic(f.SimURLs[0].String()), newAnthropic(f.URL)
	want, err := direct.Messages.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	stream := via.Messages.NewStreaming(t.Context(), params)
	defer stream.Close()
	var msg anthropic.Message
	for i := 0; stream.Next(); i++ {
		if i == 10 {
			killStreamingWorker(t, f)
		}
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(msg.Content) != len(want.Content) {
		t.Fatalf("%d blocks, want %d: %s", len(msg.Content), len(want.Content), msg.RawJSON())
	}
	for i := range want.Content {
		if msg.Content[i].Type != want.Content[i].Type || msg.Content[i].Text != want.Content[i].Text || msg.Content[i].Thinking != want.Content[i].Thinking {
			t.Errorf("block %d: %s, want %s", i, msg.Content[i].RawJSON(), want.Content[i].RawJSON())
		}
	}
	if msg.Usage.OutputTokens != want.Usage.OutputTokens || msg.StopReason != want.StopReason {
		t.Errorf("%d output tokens, stop %q; want %d, %q", msg.Usage.OutputTokens, msg.StopReason, want.Usage.OutputTokens, want.StopReason)
	}
}

// slowFleet starts two workers of one slot in front of simulators that
// stream a thinking model's answer over a second or two, with a short ack
// wait, for tests that kill a worker mid-stream.
func slowFleet(t *testing.T) *fleettest.Fleet {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "qwen3:latest", Capabilities: []string{"completion", "thinking"}}}
	sim.TokensPerSecond = 40
	return fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, AckWait: time.Second})
}

// killStreamingWorker kills the worker whose simulated Ollama is generating.
func killStreamingWorker(t *testing.T, f *fleettest.Fleet) {
	t.Helper()
	for i := range f.Sims {
		if f.Sims[i].Stats().Active == 1 {
			f.KillWorker(i)
			return
		}
	}
	t.Fatal("no worker is streaming")
}

// anthropicError returns err as the SDK's *anthropic.Error, failing the test if it is not one.
func anthropicError(t *testing.T, err error) *anthropic.Error {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %v (%T), want an *anthropic.Error", err, err)
	}
	return apiErr
}
