package worker_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
)

// TestListingsFollowLoadsAtOnce: a job that loads its model, or unloads it
// with keep_alive 0, shows in /api/ps through the dispatcher long before
// the next heartbeat (5s here).
func TestListingsFollowLoadsAtOnce(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Heartbeat: 5 * time.Second})
	loaded := func() bool {
		resp, err := http.Get(f.URL + "/api/ps")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var ps api.ProcessResponse
		if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
			t.Fatal(err)
		}
		return len(ps.Models) > 0
	}
	if loaded() {
		t.Fatal("a model is loaded before any job ran")
	}
	for _, c := range []struct {
		body string
		want bool
	}{
		{`{"model":"llama3.2","prompt":""}`, true},                 // Ollama's way to load a model.
		{`{"model":"llama3.2","prompt":"","keep_alive":0}`, false}, // and to unload it.
	} {
		resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		began := time.Now()
		fleettest.WaitFor(t, time.Second, "/api/ps to follow "+c.body, func() bool { return loaded() == c.want })
		t.Logf("%s: /api/ps followed after %s", c.body, time.Since(began).Round(time.Millisecond))
	}
}
