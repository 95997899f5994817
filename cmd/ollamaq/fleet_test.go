package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// deployment is a queue without workers, whose node records and jobs the
// test writes itself, so the output is the same every run.
func deployment(t *testing.T) (*queue.Queue, *cli) {
	t.Helper()
	b := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return q, newCLI(t, b.ClientURL())
}

// putNodes writes two node records as of the fixed clock.
func putNodes(t *testing.T, q *queue.Queue) {
	t.Helper()
	started := clock.Add(-time.Hour)
	nodes := []*fleet.Node{
		{ID: "gpu-a", State: fleet.StateReady, OllamaURL: "http://10.0.0.1:11434", OllamaVersion: "0.17.4",
			Labels: map[string]string{"gpu": "a100"},
			Models: []api.ListModelResponse{{Name: "llama3.2:latest", Model: "llama3.2:latest", Size: 2019393189},
				{Name: "qwen2.5:0.5b", Model: "qwen2.5:0.5b", Size: 397821319}},
			Loaded:     []api.ProcessModelResponse{{Name: "llama3.2:latest", Model: "llama3.2:latest", ExpiresAt: clock.Add(4 * time.Minute)}},
			SlotsTotal: 4, SlotsBusy: 3, SlotsPeak: 4, SlotsReserved: 1, JobsDone: 1234, JobsFailed: 2,
			Served:    map[string]fleet.Counts{"llama3.2:latest": {Jobs: 1200, Tokens: 90000, Loads: 3}, "qwen2.5:0.5b": {Jobs: 34, Failed: 2, Loads: 2}},
			StartedAt: started, UpdatedAt: clock.Add(-2 * time.Second)},
		{ID: "gpu-b", State: fleet.StateUnhealthy, OllamaURL: "http://10.0.0.2:11434", OllamaVersion: "0.17.4",
			Models:     []api.ListModelResponse{{Name: "llama3.2:latest", Model: "llama3.2:latest", Size: 2019393189}},
			SlotsTotal: 1, LastError: "connection refused", StartedAt: started, UpdatedAt: clock.Add(-5 * time.Second)},
	}
	for _, n := range nodes {
		if _, err := fleet.Put(t.Context(), q.JetStream(), n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNodesGolden(t *testing.T) {
	q, c := deployment(t)
	putNodes(t, q)
	for _, tt := range []struct{ name, golden string }{{"table", "nodes.txt"}, {"json", "nodes.json"}} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"nodes"}
			if tt.name == "json" {
				args = append(args, "--json")
			}
			code, out, errOut := c.run(args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, out)
		})
	}
}

func TestQueuesGolden(t *testing.T) {
	q, c := deployment(t)
	putNodes(t, q)
	ctx := t.Context()
	// llama3.2 has consumers (a worker served it); phi3 has none.
	for _, class := range job.Classes {
		if _, err := q.Consumer(ctx, "llama3.2:latest", class); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(model string, class job.Class, n int) {
		for range n {
			if _, err := q.Publish(ctx, queue.Job{ID: job.NewID(), Model: model, Class: class, Route: "/api/generate",
				Reply: "ollamaq.reply.t.x", Body: []byte(`{"model":"` + model + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("llama3.2:latest", job.Batch, 5)
	publish("llama3.2:latest", job.Interactive, 1)
	publish("llama3.2:latest", job.Async, 3)
	publish("phi3:latest", job.Interactive, 2)
	// One batch job is running: a worker took it.
	cons, err := q.Consumer(ctx, "llama3.2:latest", job.Batch)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for range got.Messages() {
	}
	// Ages count from the first job queued, a minute and a half ago.
	s, err := q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return first.Time.Add(90 * time.Second) }

	for _, tt := range []struct{ name, golden string }{{"table", "queues.txt"}, {"json", "queues.json"}} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"queues"}
			if tt.name == "json" {
				args = append(args, "--json")
			}
			code, out, errOut := c.run(args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, scrub(out, "oldest_waiting"))
		})
	}
}

func TestTop(t *testing.T) {
	q, c := deployment(t)
	putNodes(t, q)
	tests := []struct {
		name  string
		args  []string
		check func(out string) bool
	}{
		{"plain", nil, func(out string) bool {
			return strings.Count(out, "--- 2026-01-02T03:04:05Z") == 2 && strings.Count(out, "gpu-a") == 2 && strings.Contains(out, "OLDEST WAITING")
		}},
		{"json", []string{"--json"}, func(out string) bool {
			return strings.Count(out, "\n") == 2 && strings.HasPrefix(out, `{"time":"2026-01-02T03:04:05Z","nodes":[{"id":"gpu-a"`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := c.run(append([]string{"top", "--count", "2", "--interval", "10ms"}, tt.args...)...)
			if code != exitOK || !tt.check(out) {
				t.Errorf("exit %d (%s), output:\n%s", code, errOut, out)
			}
		})
	}
}
