package clients_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// recorder is an http.RoundTripper that keeps a copy of the last response
// body as the SDK reads it, so a test can check the bytes under the SDK's
// parsing (the SDK ends a stream quietly both at [DONE] and at EOF).
type recorder struct {
	mu   sync.Mutex
	body *bytes.Buffer
	hdr  http.Header
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	buf := new(bytes.Buffer)
	r.mu.Lock()
	r.body, r.hdr = buf, resp.Header.Clone()
	r.mu.Unlock()
	resp.Body = readCloser{io.TeeReader(resp.Body, &lockedWriter{&r.mu, buf}), resp.Body}
	return resp, nil
}

// header returns the last response's headers.
func (r *recorder) header() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hdr
}

// last returns what the SDK has read of the last response body.
func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.body == nil {
		return ""
	}
	return r.body.String()
}

type readCloser struct {
	io.Reader
	io.Closer
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// newOpenAI returns an SDK client for the OpenAI-compatible API under base.
func newOpenAI(base string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base + "/v1/"),
		option.WithAPIKey("ollama"), // Ollama ignores it; the SDK wants one.
		option.WithMaxRetries(0),    // A retry would hide a failed first answer.
	}, opts...)...)
}

func TestOpenAIGoSDK(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testOpenAIGoSDK(t, m.Auth) })
	}
}

func testOpenAIGoSDK(t *testing.T, auth bool) {
	f := startFleet(t, fleettest.Options{Auth: auth})
	rec := &recorder{}
	via := newOpenAI(f.URL, option.WithHTTPClient(&http.Client{Transport: rec}))
	direct := newOpenAI(f.SimURLs[0].String()) // The same simulator and seed: the reference answer.

	chatParams := openai.ChatCompletionNewParams{
		Model: chatModel,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Answer briefly."),
			openai.UserMessage("Why is the sky blue?"),
		},
	}
	want, err := direct.Chat.Completions.New(t.Context(), chatParams)
	if err != nil {
		t.Fatalf("chat with the simulator directly: %v", err)
	}
	if len(want.Choices) != 1 || want.Choices[0].Message.Content == "" {
		t.Fatalf("the simulator's reference chat answer is unusable: %s", want.RawJSON())
	}

	t.Run("chat", func(t *testing.T) {
		got, err := via.Chat.Completions.New(t.Context(), chatParams)
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
		if len(got.Choices) != 1 {
			t.Fatalf("got %d choices, want 1: %s", len(got.Choices), got.RawJSON())
		}
		c := got.Choices[0]
		if c.Message.Content != want.Choices[0].Message.Content {
			t.Errorf("content = %q, want the simulator's %q", c.Message.Content, want.Choices[0].Message.Content)
		}
		if c.Message.Role != "assistant" || c.FinishReason != "stop" {
			t.Errorf("role %q, finish_reason %q; want assistant, stop", c.Message.Role, c.FinishReason)
		}
		if got.Object != "chat.completion" || got.Model != want.Model || !strings.HasPrefix(got.ID, "chatcmpl-") {
			t.Errorf("object %q, model %q, id %q; want chat.completion, %q, chatcmpl-…", got.Object, got.Model, got.ID, want.Model)
		}
		if got.Usage.PromptTokens != want.Usage.PromptTokens || got.Usage.CompletionTokens != want.Usage.CompletionTokens ||
			got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens || got.Usage.CompletionTokens == 0 {
			t.Errorf("usage = %+v, want the simulator's %+v", got.Usage, want.Usage)
		}
	})

	t.Run("chat streaming", func(t *testing.T) {
		params := chatParams
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := via.Chat.Completions.NewStreaming(t.Context(), params)
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		var deltas, usageChunks int
		for stream.Next() {
			chunk := stream.Current()
			if !acc.AddChunk(chunk) {
				t.Fatalf("the accumulator refused chunk %s", chunk.RawJSON())
			}
			switch {
			case len(chunk.Choices) > 0 && usageChunks > 0:
				t.Errorf("a choice chunk after the usage chunk: %s", chunk.RawJSON())
			case len(chunk.Choices) > 0:
				deltas++
			case chunk.JSON.Usage.Valid():
				usageChunks++
			default:
				t.Errorf("a chunk with neither choices nor usage: %s", chunk.RawJSON())
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v\nraw: %s", err, rec.last())
		}
		raw := rec.last()
		if !strings.HasSuffix(raw, "data: [DONE]\n\n") || strings.Count(raw, "[DONE]") != 1 {
			t.Errorf("the stream does not end with exactly one data: [DONE]; raw tail %q", tail(raw, 200))
		}
		if deltas < 3 || usageChunks != 1 {
			t.Errorf("got %d delta chunks and %d usage chunks, want a stream of several deltas and one usage chunk", deltas, usageChunks)
		}
		if len(acc.Choices) != 1 {
			t.Fatalf("accumulated %d choices, want 1", len(acc.Choices))
		}
		if got := acc.Choices[0].Message.Content; got != want.Choices[0].Message.Content {
			t.Errorf("streamed content = %q, want the simulator's %q", got, want.Choices[0].Message.Content)
		}
		if acc.Choices[0].FinishReason != "stop" || acc.Choices[0].Message.Role != "assistant" {
			t.Errorf("finish_reason %q, role %q; want stop, assistant", acc.Choices[0].FinishReason, acc.Choices[0].Message.Role)
		}
		if acc.Usage.CompletionTokens != want.Usage.CompletionTokens || acc.Usage.PromptTokens != want.Usage.PromptTokens {
			t.Errorf("streamed usage = %+v, want the simulator's %+v", acc.Usage, want.Usage)
		}
	})

	completionParams := openai.CompletionNewParams{
		Model:     chatModel,
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(12),
	}
	wantCompletion, err := direct.Completions.New(t.Context(), completionParams)
	if err != nil {
		t.Fatalf("completion with the simulator directly: %v", err)
	}
	if len(wantCompletion.Choices) != 1 || wantCompletion.Choices[0].Text == "" {
		t.Fatalf("the simulator's reference completion is unusable: %s", wantCompletion.RawJSON())
	}

	t.Run("completion", func(t *testing.T) {
		got, err := via.Completions.New(t.Context(), completionParams)
		if err != nil {
			t.Fatalf("completion: %v", err)
		}
		if len(got.Choices) != 1 {
			t.Fatalf("got %d choices, want 1: %s", len(got.Choices), got.RawJSON())
		}
		if got.Choices[0].Text != wantCompletion.Choices[0].Text {
			t.Errorf("text = %q, want the simulator's %q", got.Choices[0].Text, wantCompletion.Choices[0].Text)
		}
		// max_tokens is num_predict: the text stops at the limit.
		if got.Choices[0].FinishReason != "length" || got.Usage.CompletionTokens != 12 {
			t.Errorf("finish_reason %q after %d tokens, want length after 12", got.Choices[0].FinishReason, got.Usage.CompletionTokens)
		}
		if got.Object != "text_completion" || !strings.HasPrefix(got.ID, "cmpl-") {
			t.Errorf("object %q, id %q; want text_completion, cmpl-…", got.Object, got.ID)
		}
	})

	t.Run("completion streaming", func(t *testing.T) {
		params := completionParams
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := via.Completions.NewStreaming(t.Context(), params)
		defer stream.Close()
		var text strings.Builder
		var finish string
		var usage openai.CompletionUsage
		var chunks int
		for stream.Next() {
			chunk := stream.Current()
			for _, c := range chunk.Choices {
				text.WriteString(c.Text)
				if c.FinishReason != "" {
					finish = string(c.FinishReason)
				}
			}
			if len(chunk.Choices) == 0 {
				usage = chunk.Usage
			}
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v\nraw: %s", err, rec.last())
		}
		if raw := rec.last(); !strings.HasSuffix(raw, "data: [DONE]\n\n") {
			t.Errorf("the stream does not end with data: [DONE]; raw tail %q", tail(raw, 200))
		}
		if text.String() != wantCompletion.Choices[0].Text || chunks < 3 {
			t.Errorf("streamed text = %q in %d chunks, want the simulator's %q in several", text.String(), chunks, wantCompletion.Choices[0].Text)
		}
		if finish != "length" || usage.CompletionTokens != 12 {
			t.Errorf("finish_reason %q, final usage %+v; want length and 12 completion tokens", finish, usage)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		inputs := []string{"The sky is blue.", "Grass is green."}
		for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
			params := openai.EmbeddingNewParams{
				Model:          embedModel,
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
				EncodingFormat: format,
			}
			got, err := via.Embeddings.New(t.Context(), params)
			if err != nil {
				t.Fatalf("embeddings (format %q): %v", format, err)
			}
			want, err := direct.Embeddings.New(t.Context(), params)
			if err != nil {
				t.Fatalf("embeddings with the simulator directly (format %q): %v", format, err)
			}
			if len(got.Data) != len(inputs) {
				t.Fatalf("format %q: got %d embeddings, want %d: %s", format, len(got.Data), len(inputs), got.RawJSON())
			}
			for i, e := range got.Data {
				if e.Index != int64(i) || len(e.Embedding) != 8 || !slices.Equal(e.Embedding, want.Data[i].Embedding) {
					t.Errorf("format %q: embedding %d = index %d %v, want index %d %v", format, i, e.Index, e.Embedding, i, want.Data[i].Embedding)
				}
			}
			if got.Model != embedModel || got.Usage.PromptTokens != want.Usage.PromptTokens || got.Usage.PromptTokens == 0 {
				t.Errorf("format %q: model %q, usage %+v; want %q and the simulator's %+v", format, got.Model, got.Usage, embedModel, want.Usage)
			}
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := via.Models.List(t.Context())
		if err != nil {
			t.Fatalf("list models: %v", err)
		}
		wantPage, err := direct.Models.List(t.Context())
		if err != nil {
			t.Fatalf("list models of the simulator directly: %v", err)
		}
		ids := func(ms []openai.Model) []string {
			var out []string
			for _, m := range ms {
				out = append(out, m.ID)
			}
			slices.Sort(out)
			return out
		}
		if got, want := ids(page.Data), ids(wantPage.Data); !slices.Equal(got, want) || len(got) != 2 {
			t.Errorf("model IDs = %q, want the simulator's %q", got, want)
		}
		for _, m := range page.Data {
			if m.Object != "model" || m.OwnedBy != "library" || m.Created == 0 {
				t.Errorf("model %s", m.RawJSON())
			}
		}

		m, err := via.Models.Get(t.Context(), chatModel)
		if err != nil {
			t.Fatalf("retrieve %s: %v", chatModel, err)
		}
		if m.ID != chatModel || m.Object != "model" || m.OwnedBy != "library" {
			t.Errorf("retrieve %s = %s", chatModel, m.RawJSON())
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		const name = "no-such-model"
		// As Ollama 0.32.15 answers: the retrieve route names the model as
		// its show handler does, tagged.
		cases := []struct {
			name, msg string
			call      func(c openai.Client) error
		}{
			{"chat", "model '" + name + "' not found", func(c openai.Client) error {
				p := chatParams
				p.Model = name
				_, err := c.Chat.Completions.New(t.Context(), p)
				return err
			}},
			{"chat streaming", "model '" + name + "' not found", func(c openai.Client) error {
				p := chatParams
				p.Model = name
				s := c.Chat.Completions.NewStreaming(t.Context(), p)
				defer s.Close()
				for s.Next() {
				}
				return s.Err()
			}},
			{"retrieve", "model '" + name + ":latest' not found", func(c openai.Client) error {
				_, err := c.Models.Get(t.Context(), name)
				return err
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got := apiError(t, tc.call(via))
				want := apiError(t, tc.call(direct))
				if got.StatusCode != http.StatusNotFound || got.Message != tc.msg || got.Type != "not_found_error" {
					t.Errorf("got status %d message %q type %q, want 404 %q type not_found_error", got.StatusCode, got.Message, got.Type, tc.msg)
				}
				if got.StatusCode != want.StatusCode || got.Message != want.Message || got.Type != want.Type {
					t.Errorf("got %d %q type %q, the simulator answers %d %q type %q",
						got.StatusCode, got.Message, got.Type, want.StatusCode, want.Message, want.Type)
				}
			})
		}
	})
}

// apiError returns err as the SDK's *openai.Error, failing the test if it is not one.
func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %v (%T), want an *openai.Error", err, err)
	}
	return apiErr
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
