package dispatcher_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// tenantSims counts, at the simulated Ollamas, the jobs of each tenant
// running (the prompt names the tenant) and when each job started there.
type tenantSims struct {
	mu      sync.Mutex
	running map[string]int
	peak    map[string]int
	started map[string]time.Time // by prompt
	total   map[string]int
}

func newTenantSims() *tenantSims {
	return &tenantSims{running: map[string]int{}, peak: map[string]int{}, started: map[string]time.Time{}, total: map[string]int{}}
}

func (ts *tenantSims) wrap(_ int, sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Prompt string `json:"prompt"`
		}
		_ = json.Unmarshal(body, &req) // Listings and the like have none.
		tenant, _, _ := strings.Cut(req.Prompt, " ")
		if tenant != "" {
			ts.mu.Lock()
			ts.running[tenant]++
			ts.peak[tenant] = max(ts.peak[tenant], ts.running[tenant])
			ts.started[req.Prompt] = time.Now()
			ts.total[tenant]++
			ts.mu.Unlock()
			defer func() {
				ts.mu.Lock()
				ts.running[tenant]--
				ts.mu.Unlock()
			}()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sim.ServeHTTP(w, r)
	})
}

func (ts *tenantSims) get(f func(ts *tenantSims) int) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return f(ts)
}

func (ts *tenantSims) startOf(prompt string) (time.Time, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.started[prompt]
	return t, ok
}

// fairFleet is two workers of two slots each before simulators at 20
// tokens a second, a dispatcher requiring keys with tenant fairness over
// window (0: off), and keys of the tenants "flood" and "quiet".
func fairFleet(t *testing.T, window time.Duration, held int, queueWait time.Duration) (f *fleettest.Fleet, ts *tenantSims, flood, quiet string) {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "llama3.2:latest", Loaded: true}}
	sim.TokensPerSecond, sim.TimeToFirstToken = 20, time.Millisecond
	ts = newTenantSims()
	f = fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 2, Sim: sim, Keys: true, TenantWindow: window, TenantHeld: held,
		QueueWait: queueWait, Ollama: ts.wrap})
	_, flood = f.CreateKey(apikey.Key{Name: "a", Tenant: "flood", Role: apikey.User})
	_, quiet = f.CreateKey(apikey.Key{Name: "b", Tenant: "quiet", Role: apikey.User})
	f.WaitFor("both workers' records", func() bool { return f.Node(0) != nil && f.Node(1) != nil })
	return f, ts, flood, quiet
}

// generate sends a generation of tokens tokens (at 20 a second) with
// prompt and returns its status, Retry-After and body; a canceled ctx
// gives status 0.
func generate(ctx context.Context, url, secret, prompt string, tokens int) (int, string, string) {
	body := fmt.Sprintf(`{"model":"llama3.2","prompt":%q,"stream":false,"options":{"num_predict":%d}}`, prompt, tokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/api/generate", strings.NewReader(body))
	if err != nil {
		return 0, "", err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// floodFrom keeps n requests of a second each in flight from secret until
// the test ends; it fails the test on any answer but 200.
func floodFrom(t *testing.T, url, secret string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range n {
		wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				status, _, body := generate(ctx, url, secret, fmt.Sprintf("flood %d-%d", i, j), 20)
				if status != http.StatusOK && ctx.Err() == nil {
					t.Errorf("flood request: %d %s", status, body)
					return
				}
			}
		})
	}
}

// heldAt reads the dispatcher's count of held requests from /metrics with
// the admin key.
func heldAt(t *testing.T, f *fleettest.Fleet, admin string) int {
	t.Helper()
	status, _, body := call(t, "GET", f.URL+"/metrics", admin, "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics with an admin key: %d %s", status, body)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "ollamamax_tenant_held_requests "); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(n)
		}
	}
	t.Fatal("no ollamamax_tenant_held_requests in /metrics")
	return 0
}

// pending is how many jobs wait in JetStream for llama3.2.
func pending(t *testing.T, f *fleettest.Fleet) uint64 {
	t.Helper()
	c, err := f.Queue.JetStream().Consumer(t.Context(), job.Stream, job.ConsumerName("llama3.2:latest", job.Interactive))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending
}

// TestTenantFloodDoesNotDelayAnother: a tenant keeping three times the
// fleet's slots in flight has every slot while it is alone, with the rest
// held at the dispatcher rather than queued; once another tenant is
// active, that tenant's jobs start within a worker's pickup, not behind the
// flood. With fairness off the same flood queues in JetStream and the
// other tenant's job waits behind it: the measure can fail.
func TestTenantFloodDoesNotDelayAnother(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window time.Duration
		quiet  int // the quiet tenant's requests after its first
	}{{"fair", 30 * time.Second, 4}, {"off", 0, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			f, ts, flood, quiet := fairFleet(t, tt.window, 64, 30*time.Second)
			floodFrom(t, f.URL, flood, 12)
			f.WaitFor("the flood on every slot", func() bool {
				return ts.get(func(ts *tenantSims) int { return ts.running["flood"] }) == 4
			})
			if tt.window > 0 {
				f.WaitFor("nothing of the flood waiting in JetStream", func() bool { return pending(t, f) == 0 })
			} else {
				f.WaitFor("the flood's backlog in JetStream", func() bool { return pending(t, f) == 8 })
			}
			// The quiet tenant's first job may wait for a slot to free: it
			// was not active before, so nothing was kept for it.
			if status, _, body := generate(t.Context(), f.URL, quiet, "quiet 0", 2); status != http.StatusOK {
				t.Fatalf("quiet tenant's first request: %d %s", status, body)
			}
			var worst time.Duration
			for i := 1; i <= tt.quiet; i++ {
				prompt := fmt.Sprintf("quiet %d", i)
				sent := time.Now()
				if status, _, body := generate(t.Context(), f.URL, quiet, prompt, 2); status != http.StatusOK {
					t.Fatalf("quiet tenant's request %d: %d %s", i, status, body)
				}
				at, ok := ts.startOf(prompt)
				if !ok {
					t.Fatalf("%s never reached a simulator", prompt)
				}
				worst = max(worst, at.Sub(sent))
			}
			t.Logf("the quiet tenant's jobs waited up to %s to start", worst)
			// A flood job runs a second: a free slot's pickup is far below half of it.
			if tt.window > 0 && worst > 500*time.Millisecond {
				t.Errorf("fair: the quiet tenant's jobs waited up to %s to start, want a worker's pickup (under 500ms)", worst)
			}
			if tt.window == 0 && worst < time.Second {
				t.Errorf("off: the quiet tenant's jobs waited at most %s, want at least a second behind the flood's backlog", worst)
			}
			if tt.window > 0 {
				if got := ts.get(func(ts *tenantSims) int { return ts.running["flood"] }); got > 2 {
					t.Errorf("the flood runs %d jobs with the quiet tenant active, want at most 2 of the 4 slots (the quiet tenant keeps one more than its peak of one)", got)
				}
			}
		})
	}
}

// TestTenantHeldBound: a tenant's held requests are bounded; past the
// bound it gets 503 (server busy) while alone and 429 with Retry-After in
// its API's shape while another tenant is active. A held request whose
// client leaves is dropped without harm to the rest. A model no ready
// worker serves holds nothing: its job waits in the queue and ends in 503.
func TestTenantHeldBound(t *testing.T) {
	f, ts, flood, quiet := fairFleet(t, 30*time.Second, 2, 4*time.Second)
	_, admin := f.CreateKey(apikey.Key{Name: "ops", Tenant: "ops", Role: apikey.Admin})
	ctx := t.Context()
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 8)
	send := func(ctx context.Context, prompt string) {
		go func() {
			status, _, body := generate(ctx, f.URL, flood, prompt, 40)
			answers <- answer{status, body}
		}()
	}
	for i := range 4 {
		send(ctx, fmt.Sprintf("flood %d", i))
	}
	f.WaitFor("four flood jobs running", func() bool {
		return ts.get(func(ts *tenantSims) int { return ts.running["flood"] }) == 4
	})
	leaving, leave := context.WithCancel(ctx)
	send(leaving, "flood leaving")
	f.WaitFor("one flood request held", func() bool { return heldAt(t, f, admin) == 1 })
	send(ctx, "flood held")
	f.WaitFor("two flood requests held", func() bool { return heldAt(t, f, admin) == 2 })
	status, retry, body := generate(ctx, f.URL, flood, "flood over", 1)
	if status != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, "server busy") {
		t.Errorf("alone past the bound: %d Retry-After %q %s, want Ollama's 503 server busy with Retry-After", status, retry, body)
	}
	leave()
	if a := <-answers; a.status != 0 {
		t.Fatalf("the request that left: %d %s", a.status, a.body)
	}
	f.WaitFor("the request that left dropped", func() bool { return heldAt(t, f, admin) == 1 })
	// The quiet tenant becomes active: the flood, at its bound, is now
	// contended, which is 429 in the route's shape.
	quietDone := make(chan answer, 1)
	go func() {
		status, _, body := generate(ctx, f.URL, quiet, "quiet 0", 1)
		quietDone <- answer{status, body}
	}()
	send(ctx, "flood held 2") // Refills the place the leaver left.
	f.WaitFor("two flood requests held again", func() bool { return heldAt(t, f, admin) == 2 })
	status, retry, body = call(t, "POST", f.URL+"/v1/chat/completions", flood,
		`{"model":"llama3.2","messages":[{"role":"user","content":"flood over"}]}`)
	if status != http.StatusTooManyRequests || retry == "" || !strings.Contains(body, `"rate_limit_exceeded"`) {
		t.Errorf("contended: %d Retry-After %q %s, want OpenAI's 429 rate_limit_exceeded with Retry-After", status, retry, body)
	}
	if a := <-quietDone; a.status != http.StatusOK {
		t.Errorf("quiet tenant: %d %s", a.status, a.body)
	}
	for range 6 {
		if a := <-answers; a.status != http.StatusOK {
			t.Errorf("flood request: %d %s, want every accepted request served", a.status, a.body)
		}
	}
	if _, ok := ts.startOf("flood leaving"); ok {
		t.Error("the request whose client left while held reached Ollama")
	}
	if got := ts.get(func(ts *tenantSims) int { return ts.total["flood"] }); got != 6 {
		t.Errorf("%d flood jobs reached Ollama, want the 6 accepted", got)
	}

	f.StopWorker(0)
	f.StopWorker(1)
	f.WaitFor("no ready worker", func() bool {
		for i := range 2 {
			if n := f.Node(i); n != nil && n.State == fleet.StateReady {
				return false
			}
		}
		return true
	})
	status, retry, body = generate(ctx, f.URL, flood, "flood nobody", 1)
	if status != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, "no worker took the job") {
		t.Errorf("no ready worker: %d Retry-After %q %s, want 503 with Retry-After after the queue wait", status, retry, body)
	}
}
