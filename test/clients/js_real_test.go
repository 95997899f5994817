package clients_test

import (
	"net/url"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/realollama"
	"github.com/ollamamax/ollamamax/internal/tinymodel"
)

// TestJSClientsRealOllama runs the JavaScript SDK tests of the routes that
// today's tools speak (e2e/anthropic.test.mjs: @anthropic-ai/sdk on
// /v1/messages; e2e/responses.test.mjs: openai-node on /v1/responses)
// against a dispatcher whose two workers are in front of real Ollama 0.32.15
// servers, each pinned to its own core, serving a tiny random model under
// the name the tests use. It skips where there is no Ollama binary
// (internal/realollama says why), and, like the simulated run, needs node
// and e2e/node_modules.
func TestJSClientsRealOllama(t *testing.T) {
	node, dir := nodeAndE2E(t)
	model := realollama.Model{Name: chatModel, Config: tinymodel.Config{Name: "js", Seed: 42},
		// Greedy decoding of a random model falls into loops that Ollama
		// cuts short; a repeat penalty keeps the answers whole.
		Parameters: map[string]any{"repeat_penalty": 1.5}}
	var urls []*url.URL
	for cpu := range 2 {
		s := realollama.Start(t, realollama.Options{CPU: cpu, Models: []realollama.Model{model}})
		u, err := url.Parse(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, u)
	}
	f := fleettest.Start(t, fleettest.Options{OllamaURLs: urls, Slots: 1})
	f.WaitFor("the model to be listed", func() bool { return len(f.View.Models()) == 1 })
	runJS(t, node, dir, []string{"OLLAMAMAX_URL=" + f.URL}, "anthropic.test.mjs", "responses.test.mjs")
}
