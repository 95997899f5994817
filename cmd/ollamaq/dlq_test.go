package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

func TestDLQListShowRequeue(t *testing.T) {
	f, c := withFleet(t)
	// A job for a route that cannot be queued is a dead letter at once.
	req, err := queue.NewRequester(f.NC, f.Queue, "dlqtest")
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	st, err := req.Submit(t.Context(), queue.Job{ID: "deadjob", Model: "llama3.2:latest", Class: job.Interactive,
		Route: "/api/pull", Body: []byte(`{"model":"llama3.2"}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f.WaitFor("the dead letter", func() bool {
		dl, err := f.Queue.DeadLetters(t.Context(), 0)
		return err == nil && len(dl) == 1
	})

	code, out, errOut := c.run("--server", c.server, "dlq", "list", "--json")
	var rows []deadLetterRow
	if code != exitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 {
		t.Fatalf("dlq list --json: exit %d\n%s\n%s", code, out, errOut)
	}
	r := rows[0]
	if r.Job != "deadjob" || r.Model != "llama3.2:latest" || r.Route != "/api/pull" || r.Attempts != 1 || r.Worker != "w0" ||
		!strings.Contains(r.Reason, "cannot be queued") {
		t.Errorf("dead letter %+v", r)
	}
	code, out, _ = c.run("--server", c.server, "dlq", "list")
	if code != exitOK || !strings.Contains(out, "SEQ") || !strings.Contains(out, "deadjob") {
		t.Errorf("dlq list: exit %d\n%s", code, out)
	}
	code, out, _ = c.run("--server", c.server, "dlq", "show", "1")
	if code != exitOK || !strings.Contains(out, `body:     {"model":"llama3.2"}`) {
		t.Errorf("dlq show: exit %d\n%s", code, out)
	}
	if code, _, errOut = c.run("--server", c.server, "dlq", "show", "99"); code != exitFailed || !strings.Contains(errOut, "no dead letter 99") {
		t.Errorf("dlq show 99: exit %d, %s", code, errOut)
	}
	if code, _, _ = c.run("--server", c.server, "dlq", "requeue", "x"); code != exitUsage {
		t.Errorf("dlq requeue x: exit %d, want usage", code)
	}
	// Requeued, the job is refused again (same route) and buried again: the
	// round trip itself is what is tested here.
	code, out, errOut = c.run("--server", c.server, "dlq", "requeue", "1")
	if code != exitOK || out != "requeued 1\n" {
		t.Fatalf("dlq requeue: exit %d\n%s\n%s", code, out, errOut)
	}
	f.WaitFor("the requeued job to be buried again", func() bool {
		dl, err := f.Queue.DeadLetters(t.Context(), 0)
		return err == nil && len(dl) == 1 && dl[0].Seq > 1
	})
}
