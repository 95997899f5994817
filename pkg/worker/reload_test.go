package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// messages counts a logger's records by message.
type messages struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *messages) Enabled(context.Context, slog.Level) bool { return true }
func (m *messages) WithAttrs([]slog.Attr) slog.Handler       { return m }
func (m *messages) WithGroup(string) slog.Handler            { return m }
func (m *messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n[r.Message]++
	return nil
}

func (m *messages) count(msg string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[msg]
}

// TestReload runs a worker process (worker.Run) whose Reconfigure returns
// what the test sets, and reloads it the two ways a process does: Reload
// (SIGHUP) and a change of the shared settings entry. More slots start a
// waiting job at once; fewer let the running jobs finish before the next
// starts; labels reach the node record; a Reconfigure error and an invalid
// value are refused with a log line and change nothing; every answer
// arrives whole.
func TestReload(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1}) // Its worker serves llama3.2, not this test's model.
	config, err := f.Queue.Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.PutString(t.Context(), job.ConfigWorker, "label=zone=eu"); err != nil {
		t.Fatal(err)
	}
	simCfg := ollamasim.DefaultConfig()
	simCfg.Models = []ollamasim.Model{{Name: "qwen3:0.6b", Loaded: true}}
	simCfg.TokensPerSecond, simCfg.TimeToFirstToken, simCfg.Parallel = 20, time.Millisecond, 4
	sim := httptest.NewServer(ollamasim.New(simCfg))
	t.Cleanup(sim.Close)
	u, _ := url.Parse(sim.URL) // httptest URLs always parse.

	cfg := worker.DefaultConfig("r1", u)
	cfg.NATSURL, cfg.Listen, cfg.Slots, cfg.Heartbeat = f.Broker.ClientURL(), "", 1, 500*time.Millisecond
	logs := &messages{n: map[string]int{}}
	cfg.Logger = slog.New(logs)
	cfg.Level = new(slog.LevelVar)
	reload := make(chan struct{})
	cfg.Reload = reload
	var mu sync.Mutex
	next := worker.Settings{Slots: 1, Grace: time.Second}
	var nextErr error
	var shared []string
	cfg.Reconfigure = func(text string) (worker.Settings, error) {
		mu.Lock()
		defer mu.Unlock()
		shared = append(shared, text)
		s := next
		if s.Labels == nil && strings.Contains(text, "label=zone=eu") { // Beneath the worker's own, as the layers go.
			s.Labels = map[string]string{"zone": "eu"}
		}
		if strings.Contains(text, "slots=2") {
			s.Slots = 2
		}
		return s, nextErr
	}
	set := func(s worker.Settings, err error) {
		mu.Lock()
		defer mu.Unlock()
		next, nextErr = s, err
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx, cfg) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	node := func() *fleet.Node {
		for _, n := range f.View.Nodes() {
			if n.ID == "r1" {
				return n
			}
		}
		return nil
	}
	f.WaitFor("the worker's record with the shared label", func() bool {
		n := node()
		return n != nil && maps.Equal(n.Labels, map[string]string{"zone": "eu"}) && n.SlotsTotal == 1
	})

	// An answer: began is closed at its first piece, the result sent at its end.
	type answer struct {
		began chan struct{}
		end   chan error
	}
	ask := func() answer {
		a := answer{began: make(chan struct{}), end: make(chan error, 1)}
		go func() {
			resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"qwen3:0.6b","prompt":"Why?"}`))
			if err != nil {
				a.end <- err
				return
			}
			defer func() { _ = resp.Body.Close() }()
			sc := bufio.NewScanner(resp.Body)
			var last api.GenerateResponse
			for first := true; sc.Scan(); first = false {
				if first {
					close(a.began)
				}
				last = api.GenerateResponse{}
				if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
					a.end <- err
					return
				}
			}
			if !last.Done || last.EvalCount != 24 {
				a.end <- errors.New("answer not whole: " + sc.Text())
				return
			}
			a.end <- sc.Err()
		}()
		return a
	}
	began := func(a answer, within time.Duration) bool {
		select {
		case <-a.began:
			return true
		case <-time.After(within):
			return false
		}
	}
	whole := func(what string, a answer) {
		t.Helper()
		select {
		case err := <-a.end:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: no end within 30s", what)
		}
	}
	reloadAndWait := func(msg string) {
		t.Helper()
		n := logs.count(msg)
		reload <- struct{}{}
		fleettest.WaitFor(t, 15*time.Second, "log "+msg, func() bool { return logs.count(msg) > n })
	}

	// One slot: the second answer waits. Two: it starts at once.
	first := ask()
	if !began(first, 30*time.Second) {
		t.Fatal("no answer began")
	}
	second := ask()
	if began(second, 300*time.Millisecond) {
		t.Fatal("a second answer began on a worker of one slot")
	}
	set(worker.Settings{Slots: 2, InteractiveReserve: 1, Labels: map[string]string{"gpu": "a100"}, Grace: time.Second, LogLevel: slog.LevelWarn}, nil)
	reloadAndWait("reloaded")
	if !began(second, 5*time.Second) {
		t.Fatal("the waiting answer did not begin when the slots became two")
	}
	select {
	case err := <-first.end:
		t.Fatalf("the first answer ended (%v) before the second began: the test needs longer answers", err)
	default:
	}
	f.WaitFor("the record with two slots, one reserved, and the new labels", func() bool {
		n := node()
		return n != nil && n.SlotsTotal == 2 && n.SlotsReserved == 1 && maps.Equal(n.Labels, map[string]string{"gpu": "a100"})
	})
	if got := cfg.Level.Level(); got != slog.LevelWarn {
		t.Errorf("log level %s after the reload, want warn", got)
	}
	whole("the answer running across the reload", first)
	whole("the answer the reload started", second)

	// Fewer slots than jobs running: both finish, and a third starts only then.
	first, second = ask(), ask()
	if !began(first, 30*time.Second) || !began(second, 30*time.Second) {
		t.Fatal("two answers did not both begin on two slots")
	}
	set(worker.Settings{Slots: 1, Grace: time.Second}, nil)
	reloadAndWait("reloaded")
	third := ask()
	if began(third, 300*time.Millisecond) {
		t.Fatal("a third answer began with two running on one slot")
	}
	whole("an answer running when the slots became fewer", first)
	whole("another", second)
	if !began(third, 30*time.Second) {
		t.Fatal("the third answer did not begin once the running ones ended")
	}
	whole("the answer after", third)

	// Refused: Reconfigure's error, then an invalid value.
	set(worker.Settings{Slots: 8}, errors.New(`worker.conf line 1: slots="many": parse error`))
	reloadAndWait("reload refused: keeping the settings in use")
	set(worker.Settings{Slots: 0}, nil)
	reloadAndWait("reload refused: keeping the settings in use")
	set(worker.Settings{Slots: 1, InteractiveReserve: -1}, nil)
	reloadAndWait("reload refused: keeping the settings in use")
	if n := node(); n == nil || n.SlotsTotal != 1 {
		t.Errorf("record after refused reloads: %+v, want one slot still", n)
	}

	// The shared entry changes.
	set(worker.Settings{Slots: 1, Grace: time.Second}, nil)
	if _, err := config.PutString(t.Context(), job.ConfigWorker, "label=zone=eu\nslots=2"); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("two slots from the shared settings", func() bool {
		n := node()
		return n != nil && n.SlotsTotal == 2
	})
	mu.Lock()
	// At start, five SIGHUPs with the entry as it was, then its change.
	if want := []string{"label=zone=eu", "label=zone=eu", "label=zone=eu", "label=zone=eu", "label=zone=eu", "label=zone=eu", "label=zone=eu\nslots=2"}; !slices.Equal(shared, want) {
		t.Errorf("Reconfigure was given %q, want %q", shared, want)
	}
	mu.Unlock()
}
