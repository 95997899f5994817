package dispatcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// TestKilledWorkerIsReplacedWithinASecond: with an ack wait of 30 s, a
// worker killed mid-stream is noticed by its missing heartbeats and its job
// continued on the other worker, so the client's longest wait between two
// chunks stays near the stall bound (750 ms), not the ack wait, and the text
// is whole: nothing lost or repeated at the seam.
func TestKilledWorkerIsReplacedWithinASecond(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 50
	sim.DefaultTokens = 100 // Two seconds of streaming.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, AckWait: 30 * time.Second})
	req := &api.GenerateRequest{Model: "llama3.2", Prompt: "survive the seam"}
	want, _ := generateText(t, client(t, f.SimURLs[0].String()), req)

	var (
		text    strings.Builder
		chunks  int
		last    = time.Now()
		longest time.Duration
		killed  = make(chan struct{})
	)
	err := client(t, f.URL).Generate(context.Background(), req, func(r api.GenerateResponse) error {
		if gap := time.Since(last); chunks > 0 && gap > longest {
			longest = gap
		}
		last = time.Now()
		text.WriteString(r.Response)
		chunks++
		if chunks == 10 {
			for i := range 2 {
				if f.Sims[i].Stats().Active == 1 {
					f.KillWorker(i)
				}
			}
			close(killed)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the answer failed after its worker was killed: %v", err)
	}
	select {
	case <-killed:
	default:
		t.Fatal("the answer ended before a worker could be killed")
	}
	if text.String() != strings.Join(want, "") {
		t.Fatalf("continued answer\n%q\nwant\n%q", text.String(), strings.Join(want, ""))
	}
	if longest > 2*time.Second {
		t.Errorf("the client waited %s between two chunks, want the stall bound (750ms) and a restart, at most 2s", longest)
	}
	t.Logf("longest wait between chunks across the kill: %s", longest.Round(time.Millisecond))
}

// TestJobRunningPastItsQueueWaitStillFailsOver: the queue wait bounds how
// long a job waits for a worker, not how long it may run. JetStream deletes a
// message at its TTL whether or not a worker holds it, so a job's TTL must
// outlast its run: here the worker dies 2.5 s into an answer whose queue
// wait was 1 s, and the other worker still continues it.
func TestJobRunningPastItsQueueWaitStillFailsOver(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 20
	sim.DefaultTokens = 80 // Four seconds of streaming.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, QueueWait: time.Second})
	req := &api.GenerateRequest{Model: "llama3.2", Prompt: "a long answer"}
	want, _ := generateText(t, client(t, f.SimURLs[0].String()), req)

	var text strings.Builder
	chunks, killed := 0, false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := client(t, f.URL).Generate(ctx, req, func(r api.GenerateResponse) error {
		text.WriteString(r.Response)
		if chunks++; chunks == 50 {
			for i := range 2 {
				if f.Sims[i].Stats().Active == 1 {
					f.KillWorker(i)
					killed = true
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the answer failed after its worker died past the queue wait: %v", err)
	}
	if !killed {
		t.Fatal("no worker was running the job at chunk 50")
	}
	if text.String() != strings.Join(want, "") {
		t.Fatalf("continued answer\n%q\nwant\n%q", text.String(), strings.Join(want, ""))
	}
}
