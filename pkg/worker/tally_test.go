package worker_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/fleet"
)

// TestNodeRecordCounts runs jobs through one worker and reads its node
// record: jobs, failures and tokens per model as Ollama counted them, and a
// load for each job that found its model unloaded, none for a job that
// found it loaded.
func TestNodeRecordCounts(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	const model = "llama3.2:latest"
	tokens := int64(0)
	generate := func(body string, want int) {
		t.Helper()
		resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != want {
			t.Fatalf("%s: %s, want %d", body, resp.Status, want)
		}
		if want != http.StatusOK {
			return
		}
		var last api.GenerateResponse
		dec := json.NewDecoder(resp.Body)
		for dec.More() {
			if err := dec.Decode(&last); err != nil {
				t.Fatal(err)
			}
		}
		tokens += int64(last.EvalCount)
	}
	counts := func(want fleet.Counts) {
		t.Helper()
		var got fleet.Counts
		fleettest.WaitFor(t, 10*time.Second, "node record counts "+jsonOf(want), func() bool {
			if n := f.Node(0); n != nil {
				got = n.Served[model]
			}
			return got == want
		})
	}
	generate(`{"model":"llama3.2","prompt":"Why is the sky blue?"}`, http.StatusOK) // Loads it.
	counts(fleet.Counts{Jobs: 1, Tokens: tokens, Loads: 1})
	generate(`{"model":"llama3.2","prompt":"And the sea?"}`, http.StatusOK) // Loaded already.
	counts(fleet.Counts{Jobs: 2, Tokens: tokens, Loads: 1})
	// Unloads it: a node command to each worker that has it loaded
	// (pkg/dispatcher/unload.go), not a job.
	generate(`{"model":"llama3.2","prompt":"","keep_alive":0}`, http.StatusOK)
	generate(`{"model":"llama3.2","prompt":"Once more?"}`, http.StatusOK) // Loads it again.
	counts(fleet.Counts{Jobs: 3, Tokens: tokens, Loads: 2})
	generate(`{"model":"llama3.2","prompt":"x","options":{"num_ctx":"many"}}`, http.StatusInternalServerError) // Ollama 0.32.15 answers 500 "option \"num_ctx\" must be of type integer".
	counts(fleet.Counts{Jobs: 3, Failed: 1, Tokens: tokens, Loads: 2})
	if tokens == 0 {
		t.Error("the answers had no eval_count")
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v) // Counts always encode.
	return string(b)
}
