package clients_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/realollama"
	"github.com/ollamamax/ollamamax/internal/tinymodel"
)

// residencyModel is a model that only the load-and-unload tests use, so that
// nothing else loads it meanwhile: its own weights, since Ollama serves two
// models of one file from one runner.
const residencyModel = "e2e-residency:latest"

// realFleet starts two real Ollama 0.32.15 servers, each pinned to its own
// core, serving tiny random models under the names the client tests use
// (chatModel, residencyModel), and a fleet whose two workers are in front of
// them. It skips where there is no Ollama binary (internal/realollama says
// why).
func realFleet(t *testing.T) *fleettest.Fleet {
	t.Helper()
	// Greedy decoding of a random model falls into loops that Ollama cuts
	// short; a repeat penalty keeps the answers whole.
	penalty := map[string]any{"repeat_penalty": 1.5}
	models := []realollama.Model{
		{Name: chatModel, Config: tinymodel.Config{Name: "chat", Seed: 42}, Parameters: penalty},
		{Name: residencyModel, Config: tinymodel.Config{Name: "residency", Seed: 45}, Parameters: penalty},
	}
	var urls []*url.URL
	for cpu := range 2 {
		s := realollama.Start(t, realollama.Options{CPU: cpu, Models: models})
		u, err := url.Parse(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, u)
	}
	f := fleettest.Start(t, fleettest.Options{OllamaURLs: urls, Slots: 1})
	f.WaitFor("the models to be listed", func() bool { return len(f.View.Models()) == len(models) })
	return f
}

// TestJSClientsRealOllama runs the JavaScript SDK tests of the routes that
// today's tools speak (e2e/anthropic.test.mjs: @anthropic-ai/sdk on
// /v1/messages; e2e/responses.test.mjs: openai-node on /v1/responses) and
// ollama-js's load-and-unload test against workers in front of real Ollama
// 0.32.15. Like the simulated run, it needs node and e2e/node_modules.
func TestJSClientsRealOllama(t *testing.T) {
	node, dir := nodeAndE2E(t)
	f := realFleet(t)
	runJS(t, node, dir, []string{"OLLAMAMAX_URL=" + f.URL}, "anthropic.test.mjs", "responses.test.mjs")
	runJS(t, node, dir, []string{"OLLAMAMAX_URL=" + f.URL, "OLLAMAMAX_RESIDENCY_MODEL=" + residencyModel},
		"--test-name-pattern=load and unload", "ollama.test.mjs")
}

// TestGoClientLoadUnloadRealOllama: with Ollama's Go client through the
// dispatcher, in front of real Ollamas, a model loaded (an empty prompt) is
// in /api/ps on the first look after the load answered, and gone from it on
// the first look after the unload (keep_alive 0) answered.
func TestGoClientLoadUnloadRealOllama(t *testing.T) {
	f := realFleet(t)
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(u, http.DefaultClient)
	ctx := t.Context()
	running := func() []string {
		ps, err := c.ListRunning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range ps.Models {
			names = append(names, m.Model)
		}
		return names
	}
	if got := running(); slices.Contains(got, residencyModel) {
		t.Fatalf("%s loaded before anything used it: %v", residencyModel, got)
	}
	generate := func(req *api.GenerateRequest) api.GenerateResponse {
		var last api.GenerateResponse
		if err := c.Generate(ctx, req, func(r api.GenerateResponse) error { last = r; return nil }); err != nil {
			t.Fatal(err)
		}
		return last
	}
	generate(&api.GenerateRequest{Model: residencyModel})
	if got := running(); !slices.Contains(got, residencyModel) {
		t.Fatalf("/api/ps right after the load: %v, want %s in it", got, residencyModel)
	}
	if r := generate(&api.GenerateRequest{Model: residencyModel, KeepAlive: &api.Duration{Duration: 0}}); r.DoneReason != "unload" {
		t.Fatalf("unload answered done_reason %q", r.DoneReason)
	}
	if got := running(); slices.Contains(got, residencyModel) {
		t.Fatalf("/api/ps right after the unload: %v, want no %s", got, residencyModel)
	}
}
