package worker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// TestPullsAskForNoMoreThanFetchBytes reads the pull requests a worker with
// 16 free slots sends while 40 jobs wait: none may bring more than
// worker.DefaultFetchBytes, counting every job as large as the connection
// carries (8 MiB), since any of them may be; and none may wait, which would
// hold up the worker's other consumers.
func TestPullsAskForNoMoreThanFetchBytes(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Parallel = 16
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.DefaultTokens = -1, -1, 2
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 16, Sim: sim})
	pulls, err := f.NC.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + job.Stream + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := pulls.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	req := requester(t, f)
	f.StopWorker(0)
	var streams []*queue.Stream
	for i := range 40 {
		streams = append(streams, submit(t, req, job.Interactive, fmt.Sprint("queued ", i)))
	}
	f.StartWorker(0)
	for _, st := range streams {
		if rep := finish(t, st); rep.Kind != job.KindDone {
			t.Fatalf("job ended with %s %q", rep.Kind, rep.Error)
		}
	}

	largest := f.NC.MaxPayload()
	n, most := 0, 0
	for {
		m, err := pulls.NextMsg(100 * time.Millisecond)
		if err == nats.ErrTimeout {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Batch    int  `json:"batch"`
			MaxBytes int  `json:"max_bytes"`
			NoWait   bool `json:"no_wait"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("pull request %s: %v", m.Data, err)
		}
		if int64(r.Batch)*largest > worker.DefaultFetchBytes {
			t.Errorf("a pull for %d jobs: up to %d bytes, more than %d", r.Batch, int64(r.Batch)*largest, worker.DefaultFetchBytes)
		}
		if !r.NoWait {
			t.Errorf("a pull that waits: %s", m.Data)
		}
		n++
		most = max(most, r.Batch)
	}
	if want := int(worker.DefaultFetchBytes / largest); most != want {
		t.Errorf("at most %d jobs asked for in one pull, want %d: as many as the budget holds", most, want)
	}
	t.Logf("%d pulls, at most %d jobs in one", n, most)
}
