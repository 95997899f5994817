package fleet

import (
	"testing"
	"time"

	"github.com/ollama/ollama/api"
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
