package dispatcher_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestAPIVersionIsTheOllamaModule: the version the dispatcher reports with
// no worker up is that of the Ollama module in go.mod, whose wire types and
// behaviour OllamaMax is built and tested against.
func TestAPIVersionIsTheOllamaModule(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/ollama/ollama v(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod requires no github.com/ollama/ollama")
	}
	if got, want := dispatcher.APIVersion, string(m[1]); got != want {
		t.Errorf("APIVersion = %q, go.mod has Ollama v%s", got, want)
	}
}

// TestVersion: /api/version is the lowest version the live workers' Ollamas
// report, and APIVersion while none is up.
func TestVersion(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = -1, -1
	sim.Version = "0.30.2"
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim})
	version := func(base string) string {
		t.Helper()
		status, _, body := call(t, "GET", base+"/api/version", "", "")
		var v struct{ Version string }
		if err := json.Unmarshal([]byte(body), &v); status != 200 || err != nil {
			t.Fatalf("GET /api/version: %d %s (%v)", status, body, err)
		}
		return v.Version
	}
	f.WaitFor("the worker's Ollama version in its record", func() bool { return f.View.OllamaVersion() != "" })
	if got := version(f.URL); got != sim.Version {
		t.Errorf("with a worker in front of Ollama %s: version %q", sim.Version, got)
	}

	// The same queue, seen through a node bucket no worker writes to.
	kv, err := f.Queue.JetStream().CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "no-nodes"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	view, err := fleet.Watch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = view.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	req, err := queue.NewRequester(f.NC, f.Queue, "version")
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	srv, err := dispatcher.NewServer(f.Queue, req, view, dispatcher.Options{Logger: fleettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	if got := version(hs.URL); got != dispatcher.APIVersion {
		t.Errorf("with no worker: version %q, want APIVersion %s", got, dispatcher.APIVersion)
	}
}
