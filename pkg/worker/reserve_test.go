package worker_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// laneGate holds every batch-lane request at the simulator until open is
// closed, counting how many it holds at once; other requests pass.
type laneGate struct {
	open          chan struct{}
	mu            sync.Mutex
	running, peak int
	interactive   atomic.Int64 // interactive requests that reached Ollama
}

func (g *laneGate) wrap(_ int, sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !bytes.Contains(body, []byte("lane batch")) {
			g.interactive.Add(1)
			sim.ServeHTTP(w, r)
			return
		}
		g.mu.Lock()
		g.running++
		g.peak = max(g.peak, g.running)
		g.mu.Unlock()
		select {
		case <-g.open:
		case <-r.Context().Done():
		}
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
		sim.ServeHTTP(w, r)
	})
}

func (g *laneGate) counts() (running, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running, g.peak
}

// TestInteractiveReserve: with batch jobs queued for every slot, a worker
// with an interactive reserve runs batch jobs on the other slots only and
// runs an interactive job at once, while they all still run; without a
// reserve the batch takes every slot; a 1-slot worker reserves nothing.
func TestInteractiveReserve(t *testing.T) {
	tests := []struct {
		name             string
		slots, reserve   int
		wantBatchRunning int // batch jobs running at once, at most
		interactiveFree  bool
		wantReserved     int // in the node record
	}{
		{name: "reserve 1 of 3", slots: 3, reserve: 1, wantBatchRunning: 2, interactiveFree: true, wantReserved: 1},
		{name: "reserve 2 of 3", slots: 3, reserve: 2, wantBatchRunning: 1, interactiveFree: true, wantReserved: 2},
		{name: "reserve 5 of 3", slots: 3, reserve: 5, wantBatchRunning: 1, interactiveFree: true, wantReserved: 2},
		{name: "no reserve", slots: 3, reserve: 0, wantBatchRunning: 3},
		{name: "1-slot worker", slots: 1, reserve: 1, wantBatchRunning: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &laneGate{open: make(chan struct{})}
			f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: tt.slots, Ollama: g.wrap,
				Worker: func(_ int, c *worker.Config) { c.InteractiveReserve = tt.reserve }})
			f.WaitFor(fmt.Sprintf("the node record to say %d slots reserved", tt.wantReserved), func() bool {
				n := f.Node(0)
				return n != nil && n.SlotsReserved == tt.wantReserved
			})
			const requester = "lanes"
			var subs []func() job.Reply
			for i := range tt.slots + 2 {
				id := job.NewID()
				sub := rawJob{id: id, subject: job.JobSubject("llama3.2:latest", job.Batch, requester),
					reply: job.ReplySubject(requester, id), route: "/api/generate",
					body: fmt.Sprintf(`{"model":"llama3.2","prompt":"lane batch %d","stream":false}`, i)}.publish(t, f)
				subs = append(subs, func() job.Reply { return end(t, sub) })
			}
			f.WaitFor(fmt.Sprintf("%d batch jobs running", tt.wantBatchRunning), func() bool {
				running, _ := g.counts()
				return running == tt.wantBatchRunning
			})
			if tt.interactiveFree {
				id := job.NewID()
				sub := rawJob{id: id, subject: job.JobSubject("llama3.2:latest", job.Interactive, requester),
					reply: job.ReplySubject(requester, id), route: "/api/generate",
					body: `{"model":"llama3.2","prompt":"lane interactive","stream":false}`}.publish(t, f)
				if r := end(t, sub); r.Kind != job.KindDone {
					t.Fatalf("interactive job ended %+v while the batch ran, want done", r)
				}
			}
			if _, peak := g.counts(); peak != tt.wantBatchRunning {
				t.Errorf("batch jobs running at once: %d, want %d", peak, tt.wantBatchRunning)
			}
			close(g.open)
			for i, end := range subs {
				if r := end(); r.Kind != job.KindDone {
					t.Errorf("batch job %d ended %+v, want done", i, r)
				}
			}
			if _, peak := g.counts(); peak > tt.wantBatchRunning {
				t.Errorf("batch jobs running at once: %d, want at most %d", peak, tt.wantBatchRunning)
			}
		})
	}
}
