package dispatcher_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
)

// largeGenerate is a non-streamed generate request of about n bytes: one
// long word of a prompt.
func largeGenerate(word string, n int) string {
	return `{"model":"llama3.2","stream":false,"prompt":"` + word + strings.Repeat("x", n) + `"}`
}

// postJSON posts body to u and returns the status, the Retry-After header
// and the body.
func postJSON(t *testing.T, u string, body io.Reader, length int64) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, body)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	req.ContentLength = length
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestLargeBodiesBeyondTheBudgetWaitUnread: with a body budget of 2 MiB and
// no worker up, two requests of 900 KiB are queued and a third waits for its
// turn, unread; a small request is queued all the same. Once a worker
// starts the queued jobs, their bytes are given back and the third is read
// and answered too.
func TestLargeBodiesBeyondTheBudgetWaitUnread(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1, BodyBudget: 2 << 20})
	f.StopWorker(0)
	metric := func(name string) float64 { return sum(scrape(t, f.URL+"/metrics"), name, nil) }
	if got := metric("ollamamax_http_body_bytes_limit"); got != 2<<20 {
		t.Fatalf("body budget %v, want %d", got, 2<<20)
	}

	bodies := []string{largeGenerate("a", 900<<10), largeGenerate("b", 900<<10), largeGenerate("c", 900<<10), largeGenerate("small", 10)}
	type answer struct {
		status int
		body   string
	}
	answers := make([]answer, len(bodies))
	var wg sync.WaitGroup
	send := func(i int) {
		wg.Go(func() {
			status, _, body := postJSON(t, f.URL+"/api/generate", strings.NewReader(bodies[i]), int64(len(bodies[i])))
			answers[i] = answer{status, body}
		})
	}
	for i := range 3 {
		send(i)
	}
	f.WaitFor("two large jobs queued and one waiting", func() bool {
		return metric("ollamamax_jobs_submitted_total") == 2 && metric("ollamamax_http_body_waiting") == 1
	})
	if held := metric("ollamamax_http_body_bytes_in_flight"); held < 2*900<<10 || held > 2<<20 {
		t.Errorf("%v body bytes in flight, want the two queued bodies, at most the budget", held)
	}
	send(3)
	f.WaitFor("the small request queued past the waiting large one", func() bool {
		return metric("ollamamax_jobs_submitted_total") == 3
	})
	if got := metric("ollamamax_http_body_waiting"); got != 1 {
		t.Errorf("%v requests waiting once the small one is queued, want 1", got)
	}

	f.StartWorker(0)
	wg.Wait()
	for i, a := range answers {
		var r struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
		}
		if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &r) != nil || !r.Done || r.Response == "" {
			t.Errorf("request %d: %d %.200s", i, a.status, a.body)
		}
	}
	for _, name := range []string{"ollamamax_http_body_bytes_in_flight", "ollamamax_http_body_waiting"} {
		if got := metric(name); got != 0 {
			t.Errorf("%s = %v once every request is answered, want 0", name, got)
		}
	}
}

// TestLargeBodyWaitEndsWithServerBusy: a request whose body does not fit
// the budget while another body is being read waits for the queue wait,
// then gets Ollama's own 503 "server busy", with Retry-After; the body
// being read is not disturbed.
func TestLargeBodyWaitEndsWithServerBusy(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 1, BodyBudget: 1 << 20, QueueWait: time.Second})
	slow, feed := io.Pipe() // A client that sends its 900 KiB slowly: it holds the budget meanwhile.
	first := largeGenerate("slow", 900<<10)
	done := make(chan int)
	go func() {
		status, _, _ := postJSON(t, f.URL+"/api/generate", slow, int64(len(first)))
		done <- status
	}()
	if _, err := io.WriteString(feed, first[:1000]); err != nil {
		t.Fatal(err)
	}
	second := largeGenerate("second", 900<<10)
	status, retry, body := postJSON(t, f.URL+"/api/generate", strings.NewReader(second), int64(len(second)))
	want := `{"error":"server busy, please try again.  maximum pending requests exceeded"}`
	if status != http.StatusServiceUnavailable || retry == "" || strings.TrimSpace(body) != want {
		t.Errorf("the request that waited: %d, Retry-After %q, %s; want 503 with Retry-After and %s", status, retry, body, want)
	}
	if _, err := io.WriteString(feed, first[1000:]); err != nil {
		t.Fatal(err)
	}
	feed.Close()
	if status := <-done; status != http.StatusOK {
		t.Errorf("the slowly sent request: %d, want 200", status)
	}
}
