package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestRunLane: ollamaq run queues its job in the lane --lane names (or
// batch with --batch), and refuses a lane that is none.
func TestRunLane(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	c := newCLI(t, f.Broker.ClientURL())
	st, err := f.Queue.JetStream().Stream(t.Context(), job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want job.Class
	}{
		{nil, job.Interactive},
		{[]string{"--lane", "async"}, job.Async},
		{[]string{"--batch"}, job.Batch},
		{[]string{"--lane", "batch", "--batch"}, job.Batch},
	} {
		args := append(append([]string{"run"}, tt.args...), "llama3.2", "hi")
		code, out, errOut := c.run(args...)
		if code != exitOK || out == "" {
			t.Fatalf("ollamaq %s = %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
		var rec audit.Record
		fleettest.WaitFor(t, 5*time.Second, "the job's audit record", func() bool {
			m, err := st.GetLastMsgForSubject(t.Context(), job.AuditFilter(job.AuditJob, ""))
			return err == nil && json.Unmarshal(m.Data, &rec) == nil && rec.Class == string(tt.want)
		})
	}
	for _, args := range [][]string{{"run", "--lane", "urgent", "llama3.2", "hi"}, {"run", "--lane", "async", "--batch", "llama3.2", "hi"}} {
		if code, _, errOut := c.run(args...); code != exitUsage || !strings.Contains(errOut, "want interactive, async or batch") {
			t.Errorf("ollamaq %s = %d, stderr %q; want usage", strings.Join(args, " "), code, errOut)
		}
	}
}

// TestRunShowsTheQueuePosition: ollamaq run, behind two jobs on a worker
// of one slot, shows where its job waits until it starts: JSON events that
// count down to position 1 with --json; on a terminal, one line replaced
// in place and cleared before the answer.
func TestRunShowsTheQueuePosition(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.DefaultTokens, sim.TimeToFirstToken = 10, 20, time.Millisecond // two seconds a job
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1, Sim: sim})
	req, err := queue.NewRequester(f.NC, f.Queue, "ahead")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	// block queues two jobs, the first running, and returns when both ended.
	block := func(t *testing.T) func() {
		var sts []*queue.Stream
		for i := range 2 {
			st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
				Body: []byte(`{"model":"llama3.2","prompt":"ahead","stream":false}`), Wait: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			sts = append(sts, st)
			if i == 0 {
				fleettest.WaitFor(t, 10*time.Second, "the first job to start", func() bool { return f.Node(0).SlotsBusy == 1 })
			}
		}
		return func() {
			for _, st := range sts {
				_ = st.Follow(t.Context(), time.Minute, time.Minute, func(rep job.Reply) bool { return rep.Kind != job.KindDone && rep.Kind != job.KindError })
				st.Close()
			}
		}
	}

	t.Run("json", func(t *testing.T) {
		wait := block(t)
		defer wait()
		c := newCLI(t, f.Broker.ClientURL())
		code, out, errOut := c.run("run", "--json", "llama3.2", "hi")
		if code != exitOK || strings.TrimSpace(out) == "" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		var positions []int
		for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
			var ev queuedEvent
			if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Event != "queued" || ev.Position < 1 {
				t.Fatalf("stderr line %q is not a queued event (%v)", l, err)
			}
			positions = append(positions, ev.Position)
		}
		if len(positions) == 0 || positions[0] > 2 || positions[len(positions)-1] != 1 {
			t.Fatalf("positions %v, want a countdown from at most 2 to 1", positions)
		}
		for i := 1; i < len(positions); i++ {
			if positions[i] > positions[i-1] {
				t.Fatalf("positions %v go up", positions)
			}
		}
	})

	t.Run("terminal", func(t *testing.T) {
		wait := block(t)
		defer wait()
		c := newCLI(t, f.Broker.ClientURL())
		c.terminal = true
		code, out, errOut := c.run("run", "llama3.2", "hi")
		if code != exitOK || strings.TrimSpace(out) == "" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if !strings.HasPrefix(errOut, "\r\033[Kqueued: position ") || !strings.HasSuffix(errOut, "\r\033[K") || strings.Contains(errOut, "\n") {
			t.Fatalf("stderr %q: want position lines replaced in place, cleared at the end", errOut)
		}
		if !strings.Contains(errOut, "queued: position 1") {
			t.Errorf("stderr %q never says position 1", errOut)
		}
	})
}
