package ollamasim_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// fastConfig is a configuration whose generations take well under a
// millisecond, with a chat model, an embedding model and a thinking model.
func fastConfig() ollamasim.Config {
	return ollamasim.Config{
		Models: []ollamasim.Model{
			{Name: "llama3.2", Loaded: true, Capabilities: []string{"completion", "tools", "insert"}},
			{Name: "nomic-embed-text", Family: "nomic-bert", ParameterSize: "137M", QuantizationLevel: "F16", Capabilities: []string{"embedding"}},
			{Name: "qwen3:8b", Family: "qwen3", ParameterSize: "8.2B", Capabilities: []string{"completion", "thinking"}},
		},
		TokensPerSecond:  1e6,
		TimeToFirstToken: time.Microsecond,
		Seed:             42,
	}
}

// mediaConfig is fastConfig with a vision model, an audio model and an
// image generation model.
func mediaConfig() ollamasim.Config {
	cfg := fastConfig()
	cfg.Models = append(cfg.Models,
		ollamasim.Model{Name: "llava", Capabilities: []string{"completion", "vision"}},
		ollamasim.Model{Name: "whisper-ish", Capabilities: []string{"completion", "audio"}},
		ollamasim.Model{Name: "flux", Capabilities: []string{"image"}},
	)
	return cfg
}

// start serves sim on a test server and returns its URL and an official
// Ollama client for it.
func start(t *testing.T, sim *ollamasim.Server) (string, *api.Client) {
	t.Helper()
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatalf("parse test server URL: %v", err)
	}
	return ts.URL, api.NewClient(u, ts.Client())
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// rawResponse is what a raw HTTP call returned.
type rawResponse struct {
	status      int
	contentType string
	header      http.Header
	body        string
}

// do sends a raw request and reads the whole reply. header holds pairs of
// header names and values to send.
func do(t *testing.T, base, method, path, body string, header ...string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return rawResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), header: resp.Header, body: string(b)}
}

func ptr[T any](v T) *T { return &v }
