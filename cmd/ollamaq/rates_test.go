package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/fleet"
)

// TestRater feeds the rater the refreshes of a node's records: rates come
// from the second record on, over the time between records; a refresh that
// sees no newer record repeats the last rates; a restart, or a count that
// goes down, starts again; a node that left is forgotten.
func TestRater(t *testing.T) {
	start := clock.Add(-time.Hour)
	rec := func(id string, started time.Time, at time.Duration, c fleet.Counts) *fleet.Node {
		return &fleet.Node{ID: id, StartedAt: started, UpdatedAt: clock.Add(at), Served: map[string]fleet.Counts{"llama3.2:latest": c}}
	}
	row := func(id string, secs float64, jobs, failed, tokens, loads int64) rateRow {
		return rateRow{Node: id, Model: "llama3.2:latest", Seconds: secs, JobsPerSecond: float64(jobs) / secs,
			TokensPerSecond: float64(tokens) / secs, Jobs: jobs, Failed: failed, Tokens: tokens, Loads: loads}
	}
	r := newRater()
	steps := []struct {
		name  string
		nodes []*fleet.Node
		want  []rateRow
	}{
		{"first sight: no rates", []*fleet.Node{rec("a", start, 0, fleet.Counts{Jobs: 10, Tokens: 240, Loads: 1})}, nil},
		{"two seconds later", []*fleet.Node{rec("a", start, 2*time.Second, fleet.Counts{Jobs: 14, Failed: 1, Tokens: 340, Loads: 2}),
			rec("b", start, 0, fleet.Counts{Jobs: 1})},
			[]rateRow{row("a", 2, 4, 1, 100, 1)}},
		{"no newer record: the same rates", []*fleet.Node{rec("a", start, 2*time.Second, fleet.Counts{Jobs: 14, Failed: 1, Tokens: 340, Loads: 2}),
			rec("b", start, 3*time.Second, fleet.Counts{Jobs: 7, Tokens: 48})},
			[]rateRow{row("a", 2, 4, 1, 100, 1), row("b", 3, 6, 0, 48, 0)}},
		{"a restarted: none for it", []*fleet.Node{rec("a", start.Add(time.Minute), 4*time.Second, fleet.Counts{Jobs: 1}),
			rec("b", start, 5*time.Second, fleet.Counts{Jobs: 7, Tokens: 48})},
			[]rateRow{row("b", 2, 0, 0, 0, 0)}},
		{"b's counts went down: none for b", []*fleet.Node{rec("a", start.Add(time.Minute), 6*time.Second, fleet.Counts{Jobs: 3}),
			rec("b", start, 6*time.Second, fleet.Counts{Jobs: 2})},
			[]rateRow{row("a", 2, 2, 0, 0, 0)}},
		{"b left, came back: none for it", []*fleet.Node{rec("a", start.Add(time.Minute), 7*time.Second, fleet.Counts{Jobs: 3})}, []rateRow{row("a", 1, 0, 0, 0, 0)}},
		{"b again", []*fleet.Node{rec("b", start, 9*time.Second, fleet.Counts{Jobs: 9})}, nil},
	}
	for _, s := range steps {
		got := r.update(s.nodes)
		if fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Errorf("%s:\n got  %v\n want %v", s.name, got, s.want)
		}
	}
}

// TestWriteRates prints the rates of two nodes, with the model's total.
func TestWriteRates(t *testing.T) {
	var b bytes.Buffer
	writeRates(&b, []rateRow{
		{Node: "gpu-a", Model: "llama3.2:latest", Seconds: 2, JobsPerSecond: 1.5, TokensPerSecond: 36, Jobs: 3, Tokens: 72, Loads: 1},
		{Node: "gpu-b", Model: "llama3.2:latest", Seconds: 2.04, JobsPerSecond: 0.5, TokensPerSecond: 12.25, Jobs: 1, Failed: 1, Tokens: 25},
		{Node: "gpu-b", Model: "qwen3:0.6b", Seconds: 2.04, JobsPerSecond: 0, TokensPerSecond: 0},
	})
	want := "NODE     MODEL            JOBS/S  TOKENS/S  FAILED  LOADS  OVER\n" +
		"gpu-a    llama3.2:latest  1.5     36.0      0       1      2s\n" +
		"gpu-b    llama3.2:latest  0.5     12.2      1       0      2s\n" +
		"gpu-b    qwen3:0.6b       0.0     0.0       0       0      2s\n" +
		"(all 2)  llama3.2:latest  2.0     48.2      1       1      \n"
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	b.Reset()
	writeRates(&b, nil)
	if got := b.String(); !strings.HasPrefix(got, "no rates yet") {
		t.Errorf("no rows: %q", got)
	}
}

// lines passes on what a command writes, a line at a time.
type lines struct {
	mu  sync.Mutex
	buf []byte
	out chan string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.out <- string(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

// TestTopRatesFleet runs top --json against a fleet of two workers while
// eight clients keep asking for answers, more than the fleet's four slots:
// its lines show, per node, jobs and tokens per second and the model
// loads the first jobs caused, and jobs waiting in the queue with the age
// of the oldest.
func TestTopRatesFleet(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.Parallel = 200, time.Millisecond, 2 // 24 tokens: 120 ms an answer.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 2, Sim: sim})
	c := newCLI(t, f.Broker.ClientURL())
	out := &lines{out: make(chan string, 1000)}
	var errb bytes.Buffer
	e := &env{stdout: out, stderr: &errb, stdin: strings.NewReader(""), getenv: func(k string) string { return c.vars[k] },
		now: time.Now, every: time.Hour}
	const refreshes = 10
	topDone := make(chan int, 1)
	go func() {
		topDone <- e.run(t.Context(), []string{"--server", c.server, "top", "--json", "--interval", "500ms", "--count", fmt.Sprint(refreshes)})
	}()
	var snaps []snapshot
	read := func() {
		t.Helper()
		select {
		case l := <-out.out:
			var s snapshot
			if err := json.Unmarshal([]byte(l), &s); err != nil {
				t.Fatalf("a line of top --json: %v\n%s", err, l)
			}
			snaps = append(snaps, s)
		case code := <-topDone:
			t.Fatalf("top ended (exit %d) after %d lines: %s", code, len(snaps), errb.String())
		case <-time.After(30 * time.Second):
			t.Fatal("no line from top within 30s")
		}
	}
	read() // top has its first records: the load starts after them.

	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range 8 {
		load.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"model":"llama3.2","prompt":"client %d question %d","stream":false}`, i, n)
				resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("generate: %v", err)
					return
				}
				_ = resp.Body.Close()
			}
		})
	}
	defer func() { close(stop); load.Wait() }()
	for len(snaps) < refreshes {
		read()
	}
	if code := <-topDone; code != exitOK {
		t.Fatalf("top: exit %d: %s", code, errb.String())
	}

	busy, loads, waiting := map[string]bool{}, map[string]int64{}, false
	for _, s := range snaps {
		for _, r := range s.Rates {
			if r.Model != "llama3.2:latest" || r.Seconds <= 0 {
				t.Errorf("rate row %+v: want llama3.2:latest over a positive span", r)
			}
			if r.JobsPerSecond > 0 && r.TokensPerSecond > 0 && r.Tokens > 0 {
				busy[r.Node] = true
			}
			loads[r.Node] = max(loads[r.Node], r.Loads)
		}
		for _, q := range s.Queues {
			if q.Model == "llama3.2:latest" && q.Pending > 0 && q.OldestWaiting != nil {
				waiting = true
			}
		}
	}
	for _, id := range []string{"w0", "w1"} {
		if !busy[id] {
			t.Errorf("no refresh showed %s's jobs and tokens per second", id)
		}
		if loads[id] != 1 {
			t.Errorf("%s: most loads in one refresh %d, want the one its first job made", id, loads[id])
		}
	}
	if !waiting {
		t.Error("no refresh showed jobs waiting with the oldest one's age")
	}
}
