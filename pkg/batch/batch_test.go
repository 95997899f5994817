package batch_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/batch"
)

// TestThousandLines runs a 1,000-line batch of every route through
// simulated workers: each input line gets exactly one output line, with its
// custom_id and the route's answer.
func TestThousandLines(t *testing.T) {
	_, c := fleet(t, fleettest.Options{Workers: 2, Slots: 4, Sim: fastSim(4)})
	routes := []struct{ url, body string }{
		{"/api/generate", `{"model":"llama3.2","prompt":"hi %d","stream":true}`},
		{"/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"hi %d"}]}`},
		{"/v1/chat/completions", `{"model":"llama3.2","messages":[{"role":"user","content":"hi %d"}],"stream":true}`},
		{"/v1/completions", `{"model":"llama3.2","prompt":"hi %d"}`},
		{"/api/embed", `{"model":"nomic-embed-text","input":"hi %d"}`},
		{"/v1/embeddings", `{"model":"nomic-embed-text","input":"hi %d"}`},
	}
	var lines []string
	for i := range 1000 {
		r := routes[i%len(routes)]
		lines = append(lines, fmt.Sprintf(`{"custom_id":"c%d","method":"POST","url":"%s","body":%s}`, i, r.url, fmt.Sprintf(r.body, i)))
	}
	sub := submit(t, c, source(lines), batch.SubmitOptions{Name: "thousand.jsonl"})
	if !sub.Created || sub.Queued != 1000 || sub.Record.State != batch.Queued {
		t.Fatalf("submission = created %v, queued %d, state %s; want a new batch of 1000 queued", sub.Created, sub.Queued, sub.Record.State)
	}
	st := wait(t, c, sub.Record.ID, 50*time.Second)
	if st.State != batch.Done || st.Done != 1000 {
		t.Fatalf("status %+v; want done with 1000 answered", st)
	}
	got, rst := results(t, c, sub.Record.ID)
	if len(got) != 1000 || !rst.Complete() {
		t.Fatalf("%d results, complete %v; want 1000, complete", len(got), rst.Complete())
	}
	for i := range 1000 {
		r := got[fmt.Sprintf("c%d", i)]
		if r == nil || r.Error != nil || r.Response.StatusCode != 200 {
			t.Fatalf("result of c%d = %+v", i, r)
		}
		var body map[string]any
		if err := json.Unmarshal(r.Response.Body, &body); err != nil {
			t.Fatalf("c%d (%s): body %q is not one JSON object: %v", i, routes[i%len(routes)].url, r.Response.Body, err)
		}
	}
}
