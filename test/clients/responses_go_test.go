package clients_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
)

// responsesParams is a stateless Responses request, as Codex sends them.
func responsesParams(model string, maxTokens int64) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model:           shared.ResponsesModel(model),
		Instructions:    openai.String("Answer briefly."),
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Why is the sky blue?")},
		MaxOutputTokens: openai.Int(maxTokens),
	}
}

// streamedResponse reads a Responses stream as Codex does: the text from
// the output_text deltas, the whole response from response.completed.
type streamedResponse struct {
	text      string
	completed *responses.Response
	types     []string
}

func readResponses(t *testing.T, via openai.Client, p responses.ResponseNewParams, each func(i int)) streamedResponse {
	t.Helper()
	stream := via.Responses.NewStreaming(t.Context(), p)
	defer stream.Close()
	var r streamedResponse
	for i := 0; stream.Next(); i++ {
		if each != nil {
			each(i)
		}
		e := stream.Current()
		if e.SequenceNumber != int64(i) {
			t.Errorf("event %d (%s) has sequence_number %d", i, e.Type, e.SequenceNumber)
		}
		r.types = append(r.types, e.Type)
		switch e.Type {
		case "response.output_text.delta":
			r.text += e.Delta
		case "response.completed":
			resp := e.Response
			r.completed = &resp
		case "response.failed":
			t.Fatalf("response.failed: %s", e.RawJSON())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if r.completed == nil {
		t.Fatalf("no response.completed among %q", r.types)
	}
	return r
}

func TestOpenAIGoSDKResponses(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testOpenAIGoSDKResponses(t, m.Auth) })
	}
}

func testOpenAIGoSDKResponses(t *testing.T, auth bool) {
	f := startFleet(t, fleettest.Options{Auth: auth})
	rec := &recorder{}
	via := newOpenAI(f.URL, option.WithHTTPClient(&http.Client{Transport: rec}))
	direct := newOpenAI(f.SimURLs[0].String()) // The same simulator and seed: the reference answer.
	params := responsesParams(chatModel, 40)
	want, err := direct.Responses.New(t.Context(), params)
	if err != nil {
		t.Fatalf("responses with the simulator directly: %v", err)
	}
	if want.OutputText() == "" || want.Usage.OutputTokens == 0 {
		t.Fatalf("the simulator's reference response is unusable: %s", want.RawJSON())
	}

	t.Run("create", func(t *testing.T) {
		got, err := via.Responses.New(t.Context(), params)
		if err != nil {
			t.Fatalf("responses: %v", err)
		}
		if got.OutputText() != want.OutputText() || got.Status != "completed" || !strings.HasPrefix(got.ID, "resp_") {
			t.Errorf("output %q, status %q, id %q; want the simulator's %q, completed, resp_…", got.OutputText(), got.Status, got.ID, want.OutputText())
		}
		if got.Usage.InputTokens != want.Usage.InputTokens || got.Usage.OutputTokens != want.Usage.OutputTokens ||
			got.Usage.TotalTokens != got.Usage.InputTokens+got.Usage.OutputTokens {
			t.Errorf("usage %+v, want the simulator's %+v", got.Usage, want.Usage)
		}
	})

	t.Run("stream", func(t *testing.T) {
		got := readResponses(t, via, params, nil)
		if got.text != want.OutputText() || got.completed.OutputText() != want.OutputText() {
			t.Errorf("streamed %q, completed %q; want the simulator's %q", got.text, got.completed.OutputText(), want.OutputText())
		}
		if got.types[0] != "response.created" || got.types[len(got.types)-1] != "response.completed" || len(got.types) < 8 {
			t.Errorf("events %q", got.types)
		}
		if u := got.completed.Usage; u.OutputTokens != want.Usage.OutputTokens || u.InputTokens != want.Usage.InputTokens {
			t.Errorf("streamed usage %+v, want %+v", u, want.Usage)
		}
		if h := rec.header(); h.Get("Cache-Control") != "no-cache" || h.Get("Content-Type") != "text/event-stream" {
			t.Errorf("stream headers %v, want Ollama's Cache-Control: no-cache and Content-Type: text/event-stream", h)
		}
		if raw := rec.last(); !strings.HasPrefix(raw, "event: response.created\ndata: ") {
			t.Errorf("the stream does not open with a named response.created event: %q", raw[:min(len(raw), 80)])
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		p := responsesParams("no-such-model", 40)
		_, err := via.Responses.New(t.Context(), p)
		_, wantErr := direct.Responses.New(t.Context(), p)
		got, w := apiError(t, err), apiError(t, wantErr)
		if got.StatusCode != http.StatusNotFound || got.Type != "not_found_error" {
			t.Errorf("got %d %q, want 404 not_found_error", got.StatusCode, got.Type)
		}
		if got.StatusCode != w.StatusCode || got.Message != w.Message || got.Type != w.Type {
			t.Errorf("got %d %q %q, the simulator answers %d %q %q", got.StatusCode, got.Message, got.Type, w.StatusCode, w.Message, w.Type)
		}
	})
}

// TestOpenAIGoSDKResponsesStreamSurvivesAWorkerKill: a Responses stream
// continued by another worker reads, through the SDK, as one: sequence
// numbers without a gap, and response.completed holding the reasoning and
// the text an uninterrupted run gives.
func TestOpenAIGoSDKResponsesStreamSurvivesAWorkerKill(t *testing.T) {
	f := slowFleet(t)
	params := responsesParams("qwen3", 60)
	direct := newOpenAI(f.SimURLs[0].String())
	want, err := direct.Responses.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	got := readResponses(t, newOpenAI(f.URL), params, func(i int) {
		if i == 30 {
			killStreamingWorker(t, f)
		}
	})
	if got.text != want.OutputText() || got.completed.OutputText() != want.OutputText() {
		t.Errorf("streamed %q, completed %q; want %q", got.text, got.completed.OutputText(), want.OutputText())
	}
	if len(got.completed.Output) != len(want.Output) {
		t.Fatalf("%d output items, want %d", len(got.completed.Output), len(want.Output))
	}
	for i := range want.Output {
		g, w := got.completed.Output[i], want.Output[i]
		if g.Type != w.Type || g.Type == "reasoning" && g.EncryptedContent != w.EncryptedContent {
			t.Errorf("item %d: %s, want %s", i, g.RawJSON(), w.RawJSON())
		}
	}
	if got.completed.Usage.OutputTokens != want.Usage.OutputTokens {
		t.Errorf("%d output tokens, want %d", got.completed.Usage.OutputTokens, want.Usage.OutputTokens)
	}
}
