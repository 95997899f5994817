package dispatcher_test

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestReload runs a dispatcher whose Reconfigure returns what the test
// sets, with answers streaming through it, and asks for reloads the two
// ways a process does: Reload (SIGHUP) and a change of the shared settings
// entry. A new body limit and CORS origin apply to new requests while the
// answers streaming since before finish whole; a Reconfigure error and an
// invalid value are refused with a log line and change nothing; the entry
// present at start is applied before the API serves.
func TestReload(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = 20, time.Millisecond
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 4, Sim: sim})
	config, err := f.Queue.Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	putShared := func(text string) {
		t.Helper()
		if _, err := config.PutString(t.Context(), job.ConfigDispatcher, text); err != nil {
			t.Fatal(err)
		}
	}
	putShared("max-queued=100")

	cfg := runConfig(t)
	cfg.NATSURL = f.Broker.ClientURL()
	cfg.MaxBody, cfg.QueueWait, cfg.MaxSilence = 8<<20, time.Minute, time.Minute // 8 MiB: more than NATS carries with headers.
	logs := newRecordLog()
	cfg.Logger = slog.New(logs)
	cfg.Level = new(slog.LevelVar)
	reload := make(chan struct{})
	cfg.Reload = reload
	var mu sync.Mutex
	next := dispatcher.Settings{MaxBody: 8 << 20, QueueWait: time.Minute, MaxQueued: 512, MaxSilence: time.Minute}
	var nextErr error
	var shared []string // the texts Reconfigure was given
	cfg.Reconfigure = func(text string) (dispatcher.Settings, error) {
		mu.Lock()
		defer mu.Unlock()
		shared = append(shared, text)
		s := next
		if strings.Contains(text, "max-queued=100") {
			s.MaxQueued = 100
		}
		return s, nextErr
	}
	set := func(s dispatcher.Settings, err error) {
		mu.Lock()
		defer mu.Unlock()
		next, nextErr = s, err
	}
	done := startRun(t, cfg)
	waitServing(t, cfg.HTTPAddr, done)
	base := "http://" + cfg.HTTPAddr

	mu.Lock()
	if len(shared) != 1 || shared[0] != "max-queued=100" {
		t.Errorf("Reconfigure was given %q before serving, want the shared entry once", shared)
	}
	mu.Unlock()
	if got := logs.attr("reloaded", "max_queued"); got != "100" {
		t.Errorf("reload at start logged max_queued=%q, want 100", got)
	}
	if got := logs.attr("reloaded", "max_body"); got != "" {
		t.Errorf("reload at start logged max_body=%q changed, want it unchanged (lowered to what NATS carries, as at start)", got)
	}
	if r, l := logs.index("reloaded"), logs.index("dispatcher listening"); r < 0 || r > l {
		t.Errorf("the shared settings were applied at log record %d, the API served at %d: want them applied first", r, l)
	}

	// post sends a generation with a body of n bytes and returns the status.
	post := func(n int) int {
		t.Helper()
		body := `{"model":"llama3.2","prompt":"` + strings.Repeat("x", max(n-40, 0)) + `","stream":false}`
		resp, err := http.Post(base+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	origin := func(o string) int {
		t.Helper()
		resp, _ := getWithOrigin(t, base+"/api/version", o)
		return resp.StatusCode
	}
	// streams starts n answers and returns a channel that gets each one's
	// last chunk, once each piece of the first has arrived.
	type answer struct {
		last api.GenerateResponse
		err  error
	}
	streams := func(n int) <-chan answer {
		t.Helper()
		out := make(chan answer, n)
		for range n {
			pieces := make(chan string, 100)
			go func() {
				last, err := streamGenerate(t.Context(), &http.Client{}, base, pieces)
				out <- answer{last, err}
			}()
			select {
			case <-pieces:
			case <-time.After(30 * time.Second):
				t.Fatal("no piece of an answer within 30s")
			}
		}
		return out
	}
	whole := func(what string, n int, answers <-chan answer) {
		t.Helper()
		for range n {
			a := <-answers
			if a.err != nil || !a.last.Done || a.last.EvalCount != 24 {
				t.Errorf("%s: done %v, %d tokens, %v; want all 24 tokens", what, a.last.Done, a.last.EvalCount, a.err)
			}
		}
	}
	reloadAndWait := func(msg string) {
		t.Helper()
		n := logs.count(msg)
		reload <- struct{}{}
		logs.wait(t, msg, n+1)
	}

	reloadAndWait("reloaded: nothing changed") // The same settings, the body limit lowered as at start.
	if got := post(4096); got != http.StatusOK {
		t.Fatalf("a 4 KiB body before the reload: %d, want 200", got)
	}
	if got := origin("https://app.example.com"); got != http.StatusForbidden {
		t.Fatalf("a foreign origin before the reload: %d, want 403", got)
	}
	inFlight := streams(3)
	set(dispatcher.Settings{MaxBody: 1000, QueueWait: time.Minute, MaxQueued: 512, MaxSilence: time.Minute,
		Origins: []string{"https://*.example.com"}, LogLevel: slog.LevelDebug, Restart: []string{"listen"}}, nil)
	reloadAndWait("reloaded")
	if got := logs.attr("these settings changed but take effect only after a restart", "settings"); got != "listen" {
		t.Errorf("restart-only settings logged as %q, want listen", got)
	}
	if got := post(4096); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 KiB body after max body became 1000: %d, want 413", got)
	}
	if got := post(500); got != http.StatusOK {
		t.Errorf("a 500-byte body after max body became 1000: %d, want 200", got)
	}
	if got := origin("https://app.example.com"); got != http.StatusNoContent && got != http.StatusOK {
		t.Errorf("an origin the reload allowed: %d, want it served", got)
	}
	if got := cfg.Level.Level(); got != slog.LevelDebug {
		t.Errorf("log level %s after the reload, want debug", got)
	}
	whole("an answer streaming across the reload", 3, inFlight)

	// Refused: Reconfigure's error (a bad value in the file), then an
	// invalid setting. Nothing changes.
	inFlight = streams(2)
	set(dispatcher.Settings{MaxBody: 1 << 20}, errors.New(`dispatcher.conf line 3: queue-wait="soon": parse error`))
	reloadAndWait("reload refused: keeping the settings in use")
	set(dispatcher.Settings{MaxBody: 1 << 20, QueueWait: 10 * time.Millisecond}, nil)
	reloadAndWait("reload refused: keeping the settings in use")
	if got := post(4096); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 KiB body after refused reloads: %d, want 413 still", got)
	}
	whole("an answer streaming across refused reloads", 2, inFlight)

	// The shared entry changes: Run reloads with its text.
	set(dispatcher.Settings{MaxBody: 1 << 20, QueueWait: time.Minute, MaxQueued: 512, MaxSilence: time.Minute}, nil)
	n := logs.count("reloaded")
	putShared("max-queued=100\nmax-body=1048576")
	logs.wait(t, "reloaded", n+1)
	mu.Lock()
	if got := shared[len(shared)-1]; got != "max-queued=100\nmax-body=1048576" {
		t.Errorf("Reconfigure given %q after the entry changed", got)
	}
	mu.Unlock()
	if got := post(4096); got != http.StatusOK {
		t.Errorf("a 4 KiB body after the shared settings changed: %d, want 200", got)
	}
	if err := config.Delete(t.Context(), job.ConfigDispatcher); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "reloaded", n+2) // A deleted entry is no shared settings.
	mu.Lock()
	if got := shared[len(shared)-1]; got != "" {
		t.Errorf("Reconfigure given %q after the entry was deleted, want none", got)
	}
	mu.Unlock()
}

// index returns the position of the first record with the message msg, or -1.
func (h recordLog) index(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range *h.records {
		if r.Message == msg {
			return i
		}
	}
	return -1
}

// wait polls until n records have the message msg, failing the test after 15s.
func (h recordLog) wait(t *testing.T, msg string, n int) {
	t.Helper()
	fleettest.WaitFor(t, 15*time.Second, "log "+msg, func() bool { return h.count(msg) >= n })
}
