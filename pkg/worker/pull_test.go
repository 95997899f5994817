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
// worker.DefaultFetchBytes (with the jobs' subjects and replies), counting
// every job as large as the connection carries (8 MiB) unless the server
// caps the pull's bytes; and the worker must not fall back to a pull per
// job or two to stay under it: its first round takes its 16 jobs in two.
func TestPullsAskForNoMoreThanFetchBytes(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Parallel = 16
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.DefaultTokens = -1, -1, 2
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 16, Sim: sim})
	req := requester(t, f)
	f.StopWorker(0)
	// Only the restarted worker's pulls count: the first worker's, before
	// it stopped, found nothing and would be taken for the first round.
	pulls, err := f.NC.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + job.Stream + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := pulls.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
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
	per := int(worker.DefaultFetchBytes / largest)
	var n, capped, most int
	var first []string // the batches and caps of the first two pulls
	for {
		m, err := pulls.NextMsg(100 * time.Millisecond)
		if err == nats.ErrTimeout {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Batch    int   `json:"batch"`
			MaxBytes int64 `json:"max_bytes"`
			NoWait   bool  `json:"no_wait"`
			Expires  int64 `json:"expires"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("pull request %s: %v", m.Data, err)
		}
		n++
		most = max(most, r.Batch)
		if n <= 2 {
			first = append(first, fmt.Sprintf("%d jobs, %d bytes", r.Batch, r.MaxBytes))
		}
		switch {
		case r.MaxBytes > 0:
			capped++
			if r.MaxBytes > worker.DefaultFetchBytes+1024 {
				t.Errorf("a pull capped at %d bytes, more than %d and a job's subject and reply", r.MaxBytes, worker.DefaultFetchBytes)
			}
			if r.Expires <= 0 || r.Expires > int64(time.Second) {
				t.Errorf("a capped pull that waits %s", time.Duration(r.Expires))
			}
		case int64(r.Batch)*largest > worker.DefaultFetchBytes:
			t.Errorf("a pull for %d jobs with no byte cap: up to %d bytes, more than %d", r.Batch, int64(r.Batch)*largest, worker.DefaultFetchBytes)
		case !r.NoWait:
			t.Errorf("a pull with no byte cap that waits: %s", m.Data)
		}
	}
	want := []string{fmt.Sprintf("%d jobs, 0 bytes", per), fmt.Sprintf("%d jobs, %d bytes", 16-per, worker.DefaultFetchBytes+1024)}
	if fmt.Sprint(first) != fmt.Sprint(want) {
		t.Errorf("the first round pulled %q, want %q: as many as the budget holds at the largest size, then the rest with the bytes capped", first, want)
	}
	t.Logf("%d pulls, %d of them capped by bytes, at most %d jobs in one", n, capped, most)
}
