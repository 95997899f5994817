package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
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
