package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"go.opentelemetry.io/otel/trace"
)

// TestShortMode runs every scenario in short mode against freshly built
// binaries and checks that the harness produced a complete report. It
// asserts nothing about speed.
func TestShortMode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes for about half a minute; skipped with -short")
	}
	dir := t.TempDir()
	cfg := config{
		short:    true,
		json:     filepath.Join(dir, "benchmarks.json"),
		out:      filepath.Join(dir, "benchmarks.md"),
		svg:      filepath.Join(dir, "bench-scheduling.svg"),
		command:  "go test ./bench -run TestShortMode",
		progress: io.Discard,
		stdout:   io.Discard,
	}
	// BENCH_BIN points at prebuilt binaries; otherwise the run builds them, with
	// -race when this test is, so that they link from the packages the rest
	// of `go test -race ./...` compiled.
	cfg.binDir = os.Getenv("BENCH_BIN")
	if raceBuild {
		cfg.buildFlags = []string{"-race"}
	}
	if testing.Verbose() {
		cfg.progress, cfg.stdout = os.Stderr, os.Stderr
	}
	start := time.Now()
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("short mode took %s", time.Since(start).Round(time.Millisecond))

	if got, want := len(rep.sections), len(scenarios); got != want {
		t.Fatalf("report has %d sections, want %d", got, want)
	}
	skipped := map[string]bool{}
	for _, s := range rep.sections {
		if s.skipped {
			// The binaries lack what the scenario needs (a flag not merged
			// yet); it must say so.
			skipped[s.name] = true
			t.Logf("section %s skipped: %q", s.name, s.notes)
			if len(s.notes) == 0 {
				t.Errorf("section %s was skipped without a note", s.name)
			}
			continue
		}
		if len(s.tables) == 0 {
			t.Errorf("section %s has no table", s.name)
		}
		for _, tab := range s.tables {
			if len(tab.rows) == 0 {
				t.Errorf("section %s: table %q has no rows", s.name, tab.caption)
			}
			for _, row := range tab.rows {
				if len(row) != len(tab.header) {
					t.Errorf("section %s: row %q has %d cells, header %d", s.name, row, len(row), len(tab.header))
				}
			}
		}
	}
	md, err := os.ReadFile(cfg.out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# OllamaMax benchmarks", "Short mode", "| CPU |", "bench-scheduling.svg"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, sc := range scenarios {
		if !bytes.Contains(md, []byte(sc.title)) {
			t.Errorf("report lacks the section %q", sc.title)
		}
	}
	svg, err := os.ReadFile(cfg.svg)
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, svg)

	f := rep.figures
	for name, missing := range map[string]bool{"overhead": f.Overhead == nil, "throughput": f.Throughput == nil,
		"relay": f.Relay == nil, "scheduling": f.Scheduling == nil, "failover": f.Failover == nil, "memory": f.Memory == nil,
		"security": f.Security == nil, "keys": f.Keys == nil} {
		if missing && !skipped[name] {
			t.Errorf("scenario %s left no figures for the README's summary", name)
		}
	}
	res, err := readResults(cfg.json)
	if err != nil {
		t.Fatal(err)
	}
	again, err := renderFiles(config{from: cfg.json, out: cfg.out, svg: cfg.svg}, res.report())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range again {
		if written, err := os.ReadFile(f.path); err != nil || !bytes.Equal(f.data, written) {
			t.Errorf("%s rendered from the results file differs from the run's (%v):\n%s", filepath.Base(f.path), err, firstDiff(f.data, written))
		}
	}
}

// checkSVG fails unless b is well-formed XML with an svg root and a line.
func checkSVG(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var root string
	lines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plot is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				lines++
			}
		}
	}
	if root != "svg" || lines == 0 {
		t.Errorf("plot: root %q with %d polylines, want svg with at least one", root, lines)
	}
}

func TestHasFlag(t *testing.T) {
	l := &lab{help: map[string]string{"dispatcher": "Usage: dispatcher [flags]\n\nFlags:\n" +
		"  -id string\n    \trequester ID\n  -keys\n    \trequire API keys\n"}}
	tests := []struct {
		flag string
		want bool
	}{
		{"id", true},
		{"keys", true},
		{"key", false},
		{"nats-url", false},
	}
	for _, tt := range tests {
		if got := l.hasFlag("dispatcher", tt.flag); got != tt.want {
			t.Errorf("hasFlag(%q) = %v, want %v", tt.flag, got, tt.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name   string
		values []float64
		q      float64
		want   float64
	}{
		{"median of odd", []float64{1, 2, 3}, 0.5, 2},
		{"median of even is the lower", []float64{1, 2, 3, 4}, 0.5, 2},
		{"p99 of 100 is the 99th", seq(100), 0.99, 99},
		{"p99 of 10 is the max", seq(10), 0.99, 10},
		{"max", []float64{1, 5, 7}, 1, 7},
		{"min", []float64{1, 5, 7}, 0, 1},
		{"incomplete requests are infinite", []float64{1, 2, inf, inf}, 0.99, inf},
		{"median below the incomplete ones", []float64{1, 2, 3, inf}, 0.5, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newSample(tt.values).q(tt.q); got != tt.want {
				t.Errorf("quantile(%v, %v) = %v, want %v", tt.values, tt.q, got, tt.want)
			}
		})
	}
	if got := quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("quantile of nothing = %v, want NaN", got)
	}
}

func seq(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i + 1)
	}
	return v
}

func TestSampleCompleted(t *testing.T) {
	s := newSample([]float64{math.Inf(1), 2, 1, math.Inf(1)})
	if s.completed() != 2 || s.n() != 4 || len(s.finite()) != 2 || s.finite()[1] != 2 {
		t.Errorf("sample = %v: completed %d of %d, finite %v; want 2 of 4, [1 2]", s.v, s.completed(), s.n(), s.finite())
	}
}

func TestPoissonArrivals(t *testing.T) {
	a := poissonArrivals(7, 50, 20*time.Second, [2]int{10, 20})
	b := poissonArrivals(7, 50, 20*time.Second, [2]int{10, 20})
	if len(a) != len(b) || a[len(a)/2] != b[len(b)/2] {
		t.Fatalf("same seed gave different arrivals")
	}
	if n := len(a); n != 1000 {
		t.Errorf("%d arrivals at 50/s over 20s, want 1000", n)
	}
	// The gaps of a Poisson process are exponential: mean 1/λ, and about
	// 1-1/e of them shorter than the mean.
	short := 0
	for i := 1; i < len(a); i++ {
		if a[i].at-a[i-1].at < 20*time.Millisecond {
			short++
		}
	}
	if f := float64(short) / float64(len(a)-1); f < 0.58 || f > 0.68 {
		t.Errorf("%.2f of the gaps are under the mean gap, want about 0.63", f)
	}
	for i, x := range a {
		if x.tokens < 10 || x.tokens > 20 || (i > 0 && x.at < a[i-1].at) || x.at >= 20*time.Second {
			t.Fatalf("arrival %d = %+v out of range or order", i, x)
		}
	}
}

func TestCDFSVG(t *testing.T) {
	svg := cdfSVG(`latency <&> "test"`, []series{
		{name: "a", color: "#000", values: []float64{0.2, 0.5, 1.5}, total: 4},
		{name: "b & c", color: "#f00", values: nil, total: 3},
	})
	checkSVG(t, svg)
	if !strings.Contains(string(svg), "3 of 4 completed") {
		t.Errorf("legend lacks the completion count")
	}
}

func TestCPUTimeAndMemoryOfSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := cpuTime(pid); err != nil {
		t.Errorf("cpuTime: %v", err)
	}
	rss, hwm, err := memory(pid)
	if err != nil || rss <= 0 || hwm < rss {
		t.Errorf("memory = %d, %d, %v; want 0 < rss <= hwm", rss, hwm, err)
	}
}

// The benchmarks below are the throughput scenario's round trips inside one
// process (go test -run '^$' -bench . ./bench): b.N jobs, in parallel, with
// an in-process nats-server, workers and simulated Ollamas (internal/fleettest).
// They are for profiling the code path; `make bench` measures the real
// processes side by side.

func BenchmarkRawJetStreamLoop(b *testing.B) {
	br := natstest.Start(b)
	body := generateBody("llama3.2", "hi", 0, false)
	raw, err := startRawLoop(b.Context(), br.ClientURL(), body, body)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.close(context.Background()) })
	runParallel(b, raw.op)
}

func BenchmarkRequesterRoundTrip(b *testing.B) {
	f := unpacedFleet(b, fleettest.Options{})
	req, err := queue.NewRequester(f.NC, f.Queue, "benchreq")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = req.Close() })
	runParallel(b, requesterOp(req, "llama3.2:latest", generateBody("llama3.2", "hi", 0, false)))
}

func BenchmarkHTTPShimRoundTrip(b *testing.B) {
	f := unpacedFleet(b, fleettest.Options{})
	c := newHTTPClient(256)
	runParallel(b, httpOp(c, f.URL+"/api/generate", generateBody("llama3.2", "hi", 0, false)))
}

// BenchmarkHTTPShimRoundTripTraced is BenchmarkHTTPShimRoundTrip with the
// dispatcher and the worker tracing as OTEL_EXPORTER_OTLP_ENDPOINT makes
// them (tracing.Setup): every span batched and exported over OTLP/HTTP to a
// local collector that reads and drops them ("sampled"), or every trace
// dropped by the sampler ("unsampled": OTEL_TRACES_SAMPLER=always_off, the
// instrumentation without the export). It reports the spans exported per
// job.
func BenchmarkHTTPShimRoundTripTraced(b *testing.B) {
	for _, c := range []struct{ name, sampler string }{{"sampled", "always_on"}, {"unsampled", "always_off"}} {
		b.Run(c.name, func(b *testing.B) {
			var bytesIn atomic.Int64
			col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				bytesIn.Add(n)
				w.Header().Set("Content-Type", "application/x-protobuf")
			}))
			b.Cleanup(col.Close)
			b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.URL)
			b.Setenv("OTEL_TRACES_SAMPLER", c.sampler)
			var tps [2]trace.TracerProvider
			for i, service := range []string{"ollamamax-dispatcher", "ollamamax-worker"} {
				tp, shutdown, err := tracing.Setup(b.Context(), tracing.Process{Service: service})
				if err != nil || tp == nil {
					b.Fatalf("tracing on: %v", err)
				}
				b.Cleanup(func() { _ = shutdown(context.Background()) })
				tps[i] = tp
			}
			f := unpacedFleet(b, fleettest.Options{Tracer: tps[0], WorkerTracer: tps[1]})
			hc := newHTTPClient(256)
			runParallel(b, httpOp(hc, f.URL+"/api/generate", generateBody("llama3.2", "hi", 0, false)))
			b.StopTimer()
			for _, tp := range tps {
				if err := tp.(interface{ ForceFlush(context.Context) error }).ForceFlush(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bytesIn.Load())/float64(b.N), "export-B/op")
		})
	}
}

// unpacedFleet is one worker with 64 slots before a simulator that answers
// one token at once, with o's tracers.
func unpacedFleet(b *testing.B, o fleettest.Options) *fleettest.Fleet {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.DefaultTokens, sim.Parallel = -1, -1, 1, 64
	o.Workers, o.Slots, o.Sim = 1, 64, sim
	return fleettest.Start(b, o)
}

// runParallel calls op b.N times from 32 goroutines per CPU.
func runParallel(b *testing.B, op func(context.Context) error) {
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(b.Context()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
