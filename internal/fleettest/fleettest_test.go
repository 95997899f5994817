package fleettest_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestAuthFleet runs a fleet in operator mode: a generate through the HTTP
// dispatcher, a worker restarted on its credentials, and a NATS-native
// client on a client's, with no permission violation on any connection
// (the fleet fails the test at cleanup if there is one).
func TestAuthFleet(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Auth: true})
	generate := func() {
		t.Helper()
		resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3.2","prompt":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"done":true`) {
			t.Fatalf("generate: %d %v\n%s", resp.StatusCode, err, b)
		}
	}
	generate()

	f.StopWorker(0)
	f.StartWorker(0)
	f.WaitFor("worker 0 back in the node bucket", func() bool { return f.Node(0) != nil })
	generate()

	if got, want := f.CredsPath("w1") != "", true; got != want {
		t.Errorf("CredsPath(w1) set: %v, want %v", got, want)
	}
	nativeJob(t, f, "alice")

	// The test's own connection is an admin's: it inspects the streams.
	if _, err := f.Queue.JetStream().Stream(t.Context(), job.Stream); err != nil {
		t.Errorf("admin stream info: %v", err)
	}
}

// TestClusterFleet runs a fleet in operator mode on the three-node cluster,
// one of its workers behind a leaf node: each process is on the node its
// options say, a generate through a second dispatcher (on another node)
// completes, and so does a job of a NATS-native client.
func TestClusterFleet(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 3, LeafWorkers: 1, Cluster: true, Auth: true})
	if f.Broker != nil || f.Cluster == nil {
		t.Fatalf("Broker %v, Cluster %v; want only a cluster", f.Broker, f.Cluster)
	}
	for i, want := range []int{1, 2, -1} {
		if got := f.WorkerNode(i); got != want {
			t.Errorf("worker %d on node %d, want %d", i, got, want)
		}
		if got := f.Leaf(i) != nil; got != (want < 0) {
			t.Errorf("worker %d behind a leaf: %v, want %v", i, got, want < 0)
		}
	}
	if got, want := f.NC.ConnectedUrl(), f.Cluster.Node(0).URL(); got != want {
		t.Errorf("NC on %s, want node 0 at %s", got, want)
	}
	base := f.StartDispatcher("d2")
	resp, err := http.Post(base+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3.2","prompt":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"done":true`) {
		t.Fatalf("generate through d2: %d %v\n%s", resp.StatusCode, err, b)
	}
	s, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Replicas; got != 3 {
		t.Errorf("job stream with %d replicas, want 3", got)
	}
	nativeJob(t, f, "alice")
}

// TestOllamaURLs puts a worker in front of an Ollama the test started
// itself (here a simulator on its own server; test/realollama uses a real
// one): the fleet starts no simulator, and a job reaches that Ollama.
func TestOllamaURLs(t *testing.T) {
	cfg := ollamasim.DefaultConfig()
	cfg.TokensPerSecond, cfg.TimeToFirstToken = -1, -1
	sim := ollamasim.New(cfg)
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	u, err := url.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := fleettest.Start(t, fleettest.Options{OllamaURLs: []*url.URL{u}})
	if got := len(f.Sims); got != 0 {
		t.Errorf("%d simulators started, want 0", got)
	}
	if got := f.SimURLs; len(got) != 1 || got[0].String() != hs.URL {
		t.Errorf("SimURLs %v, want [%s]", got, hs.URL)
	}
	resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3.2","prompt":"hi","stream":false}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"done":true`) {
		t.Fatalf("generate: %d %v\n%s", resp.StatusCode, err, b)
	}
	if got := sim.Stats().Completed; got != 1 {
		t.Errorf("the Ollama completed %d generations, want 1", got)
	}
}

// nativeJob runs one job as the NATS-native client name, on its own
// credentials, and fails the test unless it ends with done.
func nativeJob(t *testing.T, f *fleettest.Fleet, name string) {
	t.Helper()
	nc := f.ClientConn(name)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	req, err := queue.NewRequester(nc, q, name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = req.Close() }()
	st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive,
		Route: "/api/generate", Body: []byte(`{"model":"llama3.2","prompt":"hi"}`), Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := ""
	err = st.Follow(t.Context(), 30*time.Second, 0, func(r job.Reply) bool {
		switch r.Kind {
		case job.KindDone, job.KindError:
			got = string(r.Kind)
			return false
		}
		return true
	})
	if want := string(job.KindDone); err != nil || got != want {
		t.Errorf("native job: %q, %v; want %q", got, err, want)
	}
}
