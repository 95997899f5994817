package worker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestOnlyAnUnloadIsANodeCommandOfAQueuedRoute: the dispatcher sends an
// unload to every worker that has the model loaded, outside the queue; any
// other generate or chat sent that way is refused unrun, for it would run
// without a slot. A done unload names the node record the worker wrote.
func TestOnlyAnUnloadIsANodeCommandOfAQueuedRoute(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	command := func(route, body string) []job.Reply {
		st, err := req.Command("w0", job.NewID(), route, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var reps []job.Reply
		for {
			rep, err := st.Next(ctx)
			if err != nil {
				t.Fatalf("%s %s: %v", route, body, err)
			}
			reps = append(reps, rep)
			if rep.Kind == job.KindDone || rep.Kind == job.KindError {
				return reps
			}
		}
	}
	for _, c := range []struct{ route, body string }{
		{"/api/generate", `{"model":"llama3.2","prompt":"hi"}`},
		{"/api/generate", `{"model":"llama3.2","prompt":"","keep_alive":"5m"}`},
		{"/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"keep_alive":0}`},
		{"/v1/chat/completions", `{"model":"llama3.2","messages":[]}`},
	} {
		reps := command(c.route, c.body)
		if last := reps[len(reps)-1]; last.Kind != job.KindError || last.Status != http.StatusBadRequest || !strings.Contains(last.Error, "is not a node command") {
			t.Errorf("%s %s: %+v, want 400 not a node command", c.route, c.body, last)
		}
	}
	if n := f.Sims[0].Stats().Requests; n != 0 {
		t.Errorf("Ollama ran %d refused commands", n)
	}
	reps := command("/api/generate", `{"model":"llama3.2","prompt":"","keep_alive":0}`)
	done := reps[len(reps)-1]
	if done.Kind != job.KindDone || done.Record == 0 || done.Worker != "w0" {
		t.Fatalf("unload: %+v, want done naming w0's record", done)
	}
	if !f.View.WaitRevision(t.Context(), "w0", done.Record, 5*time.Second) {
		t.Errorf("the record the unload named, revision %d, never reached the view", done.Record)
	}
}
