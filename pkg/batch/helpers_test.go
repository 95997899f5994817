package batch_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// source returns a batch file of lines.
func source(lines []string) batch.Source {
	data := []byte(strings.Join(lines, "\n") + "\n")
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// generateLines returns n generate requests with custom_ids req-0 ... .
func generateLines(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"custom_id":"req-%d","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"line %d"}}`, i, i)
	}
	return out
}

// fastSim answers at once, with few tokens, and has an embedding model too.
func fastSim(parallel int) ollamasim.Config {
	c := ollamasim.DefaultConfig()
	c.Models = []ollamasim.Model{{Name: "llama3.2:latest"}, {Name: "nomic-embed-text:latest", Capabilities: []string{"embedding"}}}
	c.TokensPerSecond = -1
	c.TimeToFirstToken = -1
	c.DefaultTokens = 3
	c.Parallel = parallel
	return c
}

// queueOnly is a deployment without workers: jobs stay queued.
func queueOnly(t *testing.T) (*queue.Queue, *batch.Client) {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return q, open(t, q)
}

func open(t *testing.T, q *queue.Queue, opts ...batch.Option) *batch.Client {
	t.Helper()
	c, err := batch.Open(t.Context(), q, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fleet(t *testing.T, o fleettest.Options) (*fleettest.Fleet, *batch.Client) {
	t.Helper()
	f := fleettest.Start(t, o)
	return f, open(t, f.Queue)
}

// submit submits and fails the test on error.
func submit(t *testing.T, c *batch.Client, src batch.Source, o batch.SubmitOptions) *batch.Submission {
	t.Helper()
	sub, err := c.Submit(t.Context(), src, o)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return sub
}

// wait follows the batch until it is over.
func wait(t *testing.T, c *batch.Client, id string, timeout time.Duration) batch.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	st, err := c.Watch(ctx, id, 20*time.Millisecond, func(batch.Status) {})
	if err != nil {
		t.Fatalf("Watch %s: %v (last status %+v)", id, err, st)
	}
	return st
}

// results collects a batch's results by custom_id.
func results(t *testing.T, c *batch.Client, id string) (map[string]*batch.Result, batch.Status) {
	t.Helper()
	out := map[string]*batch.Result{}
	st, err := c.Results(t.Context(), id, func(r *batch.Result) error {
		if out[r.CustomID] != nil {
			t.Errorf("custom_id %q has two results", r.CustomID)
		}
		out[r.CustomID] = r
		return nil
	})
	if err != nil {
		t.Fatalf("Results: %v", err)
	}
	return out, st
}

// queuedJobs returns the batch jobs in the job stream by job ID, with how
// many times each is there.
func queuedJobs(t *testing.T, q *queue.Queue) map[string]int {
	t.Helper()
	s, err := q.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for seq := uint64(1); ; {
		m, err := s.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject("ollamaq.jobs.*.batch.*"))
		if err != nil {
			return out
		}
		out[m.Header.Get(job.HeaderJob)]++
		seq = m.Sequence + 1
	}
}
