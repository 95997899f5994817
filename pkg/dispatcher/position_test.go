package dispatcher_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestQueuePositionRoute: a request that names itself (Ollamaq-Request-Id)
// and waits behind others can be looked up by its key while it waits: its
// position and ETA, as the worker reported them; another key gets 404, and
// so does anyone once it started. Its answer is what an unqueued request
// for the same prompt gets: the queued replies never reach the stream.
func TestQueuePositionRoute(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.DefaultTokens, sim.TimeToFirstToken = 20, 30, time.Millisecond // 1.5 s a job
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1, Sim: sim, Keys: true})
	_, alice := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
	_, bob := f.CreateKey(apikey.Key{Name: "bob", Tenant: "other", Role: apikey.User})
	const body = `{"model":"llama3.2","prompt":"where am I","stream":true}`

	if code, _, msg := call(t, http.MethodPost, f.URL+"/api/generate", alice, body, dispatcher.HeaderRequestID, "bad id!"); code != http.StatusBadRequest ||
		!strings.Contains(msg, dispatcher.HeaderRequestID) {
		t.Fatalf("a malformed request ID: %d %s, want 400 naming the header", code, msg)
	}

	cons, err := f.Queue.Consumer(t.Context(), "llama3.2:latest", job.Interactive)
	if err != nil {
		t.Fatal(err)
	}
	// waiting is how many jobs the consumer holds undelivered and delivered.
	waiting := func() (pending, delivered int) {
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return int(info.NumPending), int(info.Delivered.Consumer)
	}
	var wg sync.WaitGroup
	ids := []string{"", "", "", "r-42"}
	answers := make([]string, len(ids))
	for i, id := range ids {
		if i > 0 {
			// Each behind the one before: the first running, the others queued in order.
			fleettest.WaitFor(t, 10*time.Second, "the request before to be queued", func() bool {
				pending, delivered := waiting()
				return delivered == 1 && pending == i-1
			})
		}
		wg.Go(func() {
			var code int
			code, _, answers[i] = call(t, http.MethodPost, f.URL+"/api/generate", alice, body, dispatcher.HeaderRequestID, id)
			if code != http.StatusOK {
				t.Errorf("request %d: status %d: %s", i, code, answers[i])
			}
		})
	}
	lookup := func(secret string) (int, map[string]any) {
		code, _, b := call(t, http.MethodGet, f.URL+"/ollamamax/queue/r-42", secret, "")
		var out map[string]any
		_ = json.Unmarshal([]byte(b), &out)
		return code, out
	}
	var got map[string]any
	fleettest.WaitFor(t, 15*time.Second, "a reported position of r-42", func() bool {
		code, out := lookup(alice)
		if code == http.StatusOK && out["position"] != nil {
			got = out
			return true
		}
		return false
	})
	if p := got["position"].(float64); p < 1 || p > 3 || got["request_id"] != "r-42" || got["reported_at"] == nil {
		t.Errorf("position of r-42: %v, want 1 to 3 with when it was reported", got)
	}
	if code, out := lookup(bob); code != http.StatusNotFound {
		t.Errorf("another key looked r-42 up: %d %v, want 404", code, out)
	}
	wg.Wait()
	if code, out := lookup(alice); code != http.StatusNotFound {
		t.Errorf("r-42 looked up after its answer: %d %v, want 404", code, out)
	}
	if a, b := streamText(t, answers[3]), streamText(t, answers[0]); a != b {
		t.Errorf("the answer that waited through queued reports differs from the first:\n%s\n%s", a, b)
	}
}

// streamText is a streamed generate answer's text and its number of lines;
// it fails unless the stream ends with its final chunk.
func streamText(t *testing.T, ndjson string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(ndjson), "\n")
	var text strings.Builder
	for i, l := range lines {
		var c struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
		}
		if err := json.Unmarshal([]byte(l), &c); err != nil || c.Done != (i == len(lines)-1) {
			t.Fatalf("line %d of %q: %v, done %v", i, ndjson, err, c.Done)
		}
		text.WriteString(c.Response)
	}
	return fmt.Sprintf("%d lines: %s", len(lines), text.String())
}
