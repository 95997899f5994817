package dispatcher_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
)

// servedBy returns which simulator's request count grew since before.
func servedBy(t *testing.T, f *fleettest.Fleet, before []int64) int {
	t.Helper()
	got := -1
	for i, s := range f.Sims {
		if s.Stats().Requests > before[i] {
			if got >= 0 {
				t.Fatalf("simulators %d and %d both served a turn", got, i)
			}
			got = i
		}
	}
	return got
}

func requestCounts(f *fleettest.Fleet) []int64 {
	out := make([]int64, len(f.Sims))
	for i, s := range f.Sims {
		out[i] = s.Stats().Requests
	}
	return out
}

// TestMultiTurnChatStaysOnItsWorker: through the dispatcher, the turns of
// a conversation land on the worker that served the previous turn, found
// by its message history (/api/chat) or by the session header a coding
// agent sends (/v1/chat/completions), and find their prompt in that
// Ollama's cache. Workers have one slot, so the worker of the previous
// turn looks busy in its record just after the turn ends. Of 7 later
// turns at most two may land elsewhere (a machine too loaded for the
// preferred worker to pull within the hand-back's 50 ms hold-off); with
// three workers and no affinity, 5 of 7 by chance is a 1 in 22 event, in
// both conversations 1 in 480.
func TestMultiTurnChatStaysOnItsWorker(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = 2000, time.Millisecond
	for i := range sim.Models {
		sim.Models[i].Loaded = true
	}
	f := fleettest.Start(t, fleettest.Options{Workers: 3, Slots: 1, Sim: sim})
	c := client(t, f.URL)
	t.Run("history", func(t *testing.T) {
		msgs := []api.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "turn 1"}}
		prev, moved := -1, 0
		defer func() { checkMoved(t, moved) }()
		for turn := 1; turn <= turns; turn++ {
			before := requestCounts(f)
			hits := cacheHits(f)
			stream := false
			var answer api.Message
			if err := c.Chat(t.Context(), &api.ChatRequest{Model: "llama3.2", Messages: msgs, Stream: &stream}, func(r api.ChatResponse) error {
				answer = r.Message
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			at := servedBy(t, f, before)
			switch {
			case turn == 1:
			case at != prev:
				moved++
				t.Logf("turn %d served by worker %d, the previous by %d", turn, at, prev)
			case cacheHits(f)[at]-hits[at] != 1:
				t.Errorf("turn %d: %d prompt-cache hits on the worker of the previous turn, want 1", turn, cacheHits(f)[at]-hits[at])
			}
			prev = at
			msgs = append(msgs, api.Message{Role: answer.Role, Content: answer.Content}, api.Message{Role: "user", Content: fmt.Sprintf("turn %d", turn+1)})
		}
	})
	t.Run("session header", func(t *testing.T) {
		prev, moved := -1, 0
		defer func() { checkMoved(t, moved) }()
		for turn := 1; turn <= turns; turn++ {
			before := requestCounts(f)
			// Each turn a different prompt: only the session ties them.
			body := fmt.Sprintf(`{"model":"llama3.2","messages":[{"role":"user","content":"question %d"}]}`, turn)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("X-Claude-Code-Session-Id", "b6f1c9")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !json.Valid(b) {
				t.Fatalf("turn %d: %d %s", turn, resp.StatusCode, b)
			}
			at := servedBy(t, f, before)
			if turn > 1 && at != prev {
				moved++
				t.Logf("turn %d served by worker %d, the previous by %d", turn, at, prev)
			}
			prev = at
		}
	})
	for _, o := range []string{"busy", "gone", "cold", "new"} {
		t.Logf("%s: %v", o, dispatcherCounter(t, f.URL, `ollamamax_affinity_total{outcome="`+o+`"}`))
	}
	if hits := dispatcherCounter(t, f.URL, `ollamamax_affinity_total{outcome="hit"}`); hits < 2*(turns-1)-2 {
		t.Errorf("%v affinity hits counted, want at least %d (turns 2 to %d of both sessions, but two)", hits, 2*(turns-1)-2, turns)
	}
}

// turns is how many turns each conversation of
// TestMultiTurnChatStaysOnItsWorker has.
const turns = 8

func checkMoved(t *testing.T, moved int) {
	t.Helper()
	if moved > 2 {
		t.Errorf("%d of %d later turns served by another worker than the previous turn's, want at most 2", moved, turns-1)
	}
}

func cacheHits(f *fleettest.Fleet) []int64 {
	out := make([]int64, len(f.Sims))
	for i, s := range f.Sims {
		out[i] = s.Stats().CacheHits
	}
	return out
}

// dispatcherCounter reads one series from the dispatcher's /metrics.
func dispatcherCounter(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			var v float64
			if _, err := fmt.Sscan(string(rest), &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("no series %s on /metrics", series)
	return 0
}

// TestSessionsAreTenantsOwn: with API keys, a tenant that names another
// tenant's session ID finds nothing of it (its request counts as a new
// session, and prefers no worker), while the tenant whose session it is
// finds its previous turn.
func TestSessionsAreTenantsOwn(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Keys: true})
	_, acme := f.CreateKey(apikey.Key{Name: "a", Tenant: "acme", Role: apikey.User})
	_, rival := f.CreateKey(apikey.Key{Name: "r", Tenant: "rival", Role: apikey.User})
	_, admin := f.CreateKey(apikey.Key{Name: "m", Tenant: "ops", Role: apikey.Admin})
	outcome := func(o string) float64 {
		t.Helper()
		status, _, body := call(t, "GET", f.URL+"/metrics", admin, "")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics: %d %s", status, body)
		}
		for _, line := range strings.Split(body, "\n") {
			if rest, ok := strings.CutPrefix(line, `ollamamax_affinity_total{outcome="`+o+`"} `); ok {
				var v float64
				_, _ = fmt.Sscan(rest, &v)
				return v
			}
		}
		t.Fatalf("no ollamamax_affinity_total{outcome=%q} on /metrics", o)
		return 0
	}
	turn := func(secret string) {
		t.Helper()
		status, _, body := call(t, "POST", f.URL+"/api/generate", secret, `{"model":"llama3.2","prompt":"hi","stream":false}`,
			"X-Session-Id", "shared-name")
		if status != http.StatusOK {
			t.Fatalf("generate: %d %s", status, body)
		}
	}
	turn(acme)
	if n := outcome("new"); n != 1 {
		t.Fatalf("acme's first turn: %v new sessions counted, want 1", n)
	}
	turn(rival)
	if n, hit := outcome("new"), outcome("hit")+outcome("busy")+outcome("gone")+outcome("cold"); n != 2 || hit != 0 {
		t.Errorf("rival naming acme's session: %v new and %v found, want 2 new and none found", n, hit)
	}
	turn(acme)
	if n, found := outcome("new"), outcome("hit")+outcome("busy")+outcome("gone")+outcome("cold"); n != 2 || found != 1 {
		t.Errorf("acme's second turn: %v new and %v found, want 2 new and 1 found", n, found)
	}
}
