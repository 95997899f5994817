package dispatcher_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// classOf waits for the audit record of job id and returns its class.
func classOf(t *testing.T, f *fleettest.Fleet, id string) string {
	t.Helper()
	st, err := f.Queue.JetStream().Stream(t.Context(), job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	var rec audit.Record
	fleettest.WaitFor(t, 5*time.Second, "the audit record of job "+id, func() bool {
		m, err := st.GetLastMsgForSubject(t.Context(), job.AuditFilter(job.AuditJob, ""))
		return err == nil && json.Unmarshal(m.Data, &rec) == nil && rec.Job == id
	})
	return rec.Class
}

// callID is call, returning the job ID (X-Request-Id) instead of Retry-After.
func callID(t *testing.T, url, secret, body string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), string(b)
}

// TestPriorityHeaderChoosesTheLane: without keys the header's lane is the
// job's, and a header that names no lane is a 400 in the route's shape.
// With NATS auth on, the dispatcher and the worker do it on their role's
// permissions (fleettest fails the test on a violation).
func TestPriorityHeaderChoosesTheLane(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testPriorityHeader(t, m.Auth) })
	}
}

func testPriorityHeader(t *testing.T, auth bool) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Auth: auth})
	for _, tt := range []struct {
		header string
		want   string
	}{{"", "interactive"}, {"async", "async"}, {"batch", "batch"}, {"interactive", "interactive"}} {
		status, id, body := callID(t, f.URL+"/api/chat", "", chatBody, dispatcher.HeaderPriority, tt.header)
		if status != http.StatusOK {
			t.Fatalf("%s %q: %d %s, want 200", dispatcher.HeaderPriority, tt.header, status, body)
		}
		if got := classOf(t, f, id); got != tt.want {
			t.Errorf("%s %q: the job ran in lane %q, want %q", dispatcher.HeaderPriority, tt.header, got, tt.want)
		}
	}
	for _, tt := range []struct{ route, body, want string }{
		{"/api/chat", chatBody, `{"error":"bad Ollamaq-Priority header \"urgent\": want interactive, async or batch"}`},
		{"/v1/chat/completions", chatBody, `"type":"invalid_request_error"`},
	} {
		status, _, body := callID(t, f.URL+tt.route, "", tt.body, dispatcher.HeaderPriority, "urgent")
		if status != http.StatusBadRequest || !strings.Contains(body, tt.want) {
			t.Errorf("%s with lane urgent: %d %s, want 400 with %s", tt.route, status, body, tt.want)
		}
	}
}

// TestKeyLaneIsItsDefaultAndItsCeiling: a key of lane async runs async
// without the header, may ask for batch, and is refused 403 for
// interactive, in the route's shape.
func TestKeyLaneIsItsDefaultAndItsCeiling(t *testing.T) {
	f := keysFleet(t, false)
	_, secret := f.CreateKey(apikey.Key{Name: "evals", Tenant: "acme", Role: apikey.User, Lane: job.Async})
	for _, tt := range []struct{ header, want string }{{"", "async"}, {"batch", "batch"}, {"async", "async"}} {
		status, id, body := callID(t, f.URL+"/api/chat", secret, chatBody, dispatcher.HeaderPriority, tt.header)
		if status != http.StatusOK {
			t.Fatalf("lane %q: %d %s, want 200", tt.header, status, body)
		}
		if got := classOf(t, f, id); got != tt.want {
			t.Errorf("lane %q: the job ran in lane %q, want %q", tt.header, got, tt.want)
		}
	}
	for _, tt := range []struct{ route, want string }{
		{"/api/chat", `{"error":"lane interactive is not allowed for API key`},
		{"/v1/chat/completions", `"code":"permission_denied"`},
	} {
		before := submitted(t, f)
		status, _, body := callID(t, f.URL+tt.route, secret, chatBody, dispatcher.HeaderPriority, "interactive")
		if status != http.StatusForbidden || !strings.Contains(body, tt.want) {
			t.Errorf("%s asking for interactive: %d %s, want 403 with %s", tt.route, status, body, tt.want)
		}
		if n := submitted(t, f); n != before {
			t.Errorf("%s asking for interactive queued %d jobs, want none", tt.route, n-before)
		}
	}
}

// TestFullQueueRefusesTheLowestLaneFirst: with --max-queued 4 and the
// fleet's one slot held, two queued interactive jobs refuse a batch
// request (its bound is 2) and admit an async one (3), which then refuses
// the next async request, while interactive requests still get in until
// four wait.
func TestFullQueueRefusesTheLowestLaneFirst(t *testing.T) {
	gate := make(chan struct{})
	var reached atomic.Int64 // chats that reached Ollama
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1, MaxQueued: 4,
		Ollama: func(_ int, sim http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/api/chat" {
					reached.Add(1)
					<-gate
				}
				sim.ServeHTTP(w, r)
			})
		}})
	pending := func(c job.Class) uint64 {
		cons, err := f.Queue.Consumer(t.Context(), "llama3.2:latest", c)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.NumPending
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer open()
	send := func(lane string) {
		wg.Go(func() {
			if status, _, body := callID(t, f.URL+"/api/chat", "", chatBody, dispatcher.HeaderPriority, lane); status != http.StatusOK {
				t.Errorf("lane %s, admitted: %d %s, want 200 once the gate opens", lane, status, body)
			}
		})
	}
	send("interactive") // holds the slot
	f.WaitFor("the slot taken", func() bool { return reached.Load() == 1 })
	send("interactive")
	send("interactive")
	f.WaitFor("two interactive jobs queued", func() bool { return pending(job.Interactive) == 2 })
	refused := func(lane string) {
		t.Helper()
		status, _, body := callID(t, f.URL+"/api/chat", "", chatBody, dispatcher.HeaderPriority, lane, dispatcher.HeaderQueueFullWait, "0")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "server busy") {
			t.Errorf("lane %s with %d interactive and %d async queued: %d %s, want 503", lane, pending(job.Interactive), pending(job.Async), status, body)
		}
	}
	refused("batch")
	send("async")
	f.WaitFor("an async job queued", func() bool { return pending(job.Async) == 1 })
	refused("async")
	refused("batch")
	send("interactive")
	send("interactive")
	f.WaitFor("four interactive jobs queued", func() bool { return pending(job.Interactive) == 4 })
	refused("interactive")
}
