package fleet

import (
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

func TestModelsMergesTheFleet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := &View{nodes: map[string]*Node{
		"a": {ID: "a", Models: []api.ListModelResponse{
			{Model: "llama3.2:latest", Digest: "old", ModifiedAt: t0},
			{Model: "phi3:latest", ModifiedAt: t0.Add(2 * time.Hour)},
		}},
		"b": {ID: "b", Models: []api.ListModelResponse{
			{Model: "Llama3.2", Digest: "new", ModifiedAt: t0.Add(time.Hour)},
		}},
	}}
	got := v.Models()
	if len(got) != 2 || got[0].Model != "phi3:latest" || got[1].Digest != "new" {
		t.Fatalf("Models() = %+v, want phi3 then the newer llama3.2 once", got)
	}
	if !v.HasModel("llama3.2:latest") || v.HasModel("mistral:latest") {
		t.Error("HasModel disagrees with the records")
	}
}

func TestOllamaVersionIsTheLowest(t *testing.T) {
	v := &View{nodes: map[string]*Node{
		"a": {OllamaVersion: "0.17.4"}, "b": {OllamaVersion: "0.9.10"}, "c": {OllamaVersion: "v0.12.0-rc1"},
	}}
	if got := v.OllamaVersion(); got != "0.9.10" {
		t.Fatalf("OllamaVersion() = %q, want the lowest, 0.9.10", got)
	}
}

// TestModelsTakeWhatTheNewestOllamaKnows: an Ollama 0.32 lists a model's
// capabilities, context and embedding length; an older one of the same
// model does not. The merged listing has them whichever copy is newer.
func TestModelsTakeWhatTheNewestOllamaKnows(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := api.ListModelResponse{Model: "nomic-embed-text:latest", Digest: "d1", ModifiedAt: t0,
		Details:      api.ModelDetails{Family: "nomic-bert", ContextLength: 2048, EmbeddingLength: 768},
		Capabilities: []model.Capability{model.CapabilityEmbedding}}
	older := api.ListModelResponse{Model: "nomic-embed-text:latest", Digest: "d1", ModifiedAt: t0.Add(time.Hour),
		Details: api.ModelDetails{Family: "nomic-bert"}}
	rebuilt := api.ListModelResponse{Model: "llama3.2:latest", Digest: "other", ModifiedAt: t0.Add(time.Hour)}
	built := api.ListModelResponse{Model: "llama3.2:latest", Digest: "d2", ModifiedAt: t0,
		Details: api.ModelDetails{ContextLength: 131072}, Capabilities: []model.Capability{model.CapabilityCompletion}}
	v := &View{nodes: map[string]*Node{
		"new": {ID: "new", OllamaVersion: "0.32.15", Models: []api.ListModelResponse{newer, built}},
		"old": {ID: "old", OllamaVersion: "0.17.4", Models: []api.ListModelResponse{older, rebuilt}},
	}}
	got := map[string]api.ListModelResponse{}
	for _, m := range v.Models() {
		got[m.Model] = m
	}
	e := got["nomic-embed-text:latest"]
	if e.ModifiedAt != older.ModifiedAt || e.Details.ContextLength != 2048 || e.Details.EmbeddingLength != 768 ||
		len(e.Capabilities) != 1 || e.Capabilities[0] != model.CapabilityEmbedding {
		t.Errorf("embedding model = %+v, want the newer copy with the 0.32 copy's capabilities and lengths", e)
	}
	if l := got["llama3.2:latest"]; l.Digest != "other" || l.Details.ContextLength != 0 || len(l.Capabilities) != 0 {
		t.Errorf("llama3.2 = %+v: another digest's capabilities are not this model's", l)
	}
	if newer.Capabilities[0] != model.CapabilityEmbedding || len(older.Capabilities) != 0 {
		t.Error("Models changed the records it merged")
	}
}
