package main

import (
	"bytes"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedFigures are the figures of the run of 2026-11-26, as
// docs/benchmarks.md printed them.
func fixedFigures() figures {
	return figures{
		Overhead: &overheadFigures{Levels: []overheadLevel{
			{Streams: 1, Direct: 0.0508, OllamaMax: 0.0522},
			{Streams: 16, Direct: 0.0510, OllamaMax: 0.0533},
			{Streams: 64, Direct: 0.0509, OllamaMax: 0.0548},
		}},
		Throughput: &throughputFigures{HTTP: 5046, NATS: 7148, RawLoop: 39127},
		Relay:      &relayFigures{Streams: 64, PerStream: 100, Direct: 6328, OllamaMax: 6291, CPUPerToken: 60.1},
		Scheduling: &schedulingFigures{Load: 0.85, Simulators: 3, Requests: 268, Systems: []schedulingSystem{
			{Name: "OllamaMax", Completed: 268, P99: 4.60},
			{Name: "nginx round-robin", Completed: 182, P99: orInf(math.Inf(1))},
			{Name: "nginx least_conn", Completed: 267, P99: 21.66},
		}},
		Failover: &failoverFigures{AckWait: 2,
			OllamaMax: failoverSystem{Streams: 8, Completed: 8, Interrupted: 4, Pause: 1.96},
			Nginx:     &failoverSystem{Streams: 8, Completed: 5, Interrupted: 3, Pause: 0.001}},
		Memory: &memoryFigures{Streams: 1000, Workers: 1, PerStream: 100.2, Nginx: new(13.6)},
	}
}

// TestSummaryGolden renders the README's summary from fixed figures.
func TestSummaryGolden(t *testing.T) {
	lastRun := fixedReport()
	lastRun.took = 5*time.Minute + 30*time.Second

	noNginx := fixedReport()
	noNginx.machine = machine{cpu: "Intel(R) Xeon(R) Processor", cores: 8}
	noNginx.took = 45 * time.Second
	noNginx.figures = figures{
		Overhead:   &overheadFigures{Levels: []overheadLevel{{Streams: 8, Direct: 0.0101, OllamaMax: 0.0234}}},
		Throughput: &throughputFigures{HTTP: 512.4, NATS: 999.5, RawLoop: 1234567},
		Relay:      &relayFigures{Streams: 8, PerStream: 200, Direct: 1600, OllamaMax: 1200, CPUPerToken: 123.456},
		Scheduling: &schedulingFigures{Load: 0.9, Simulators: 2, Requests: 100, Systems: []schedulingSystem{
			{Name: "OllamaMax", Completed: 95, P99: orInf(math.Inf(1))}}},
		Failover: &failoverFigures{AckWait: 0.5, OllamaMax: failoverSystem{Streams: 4, Completed: 3, Interrupted: 2, Pause: 0.42}},
		Memory:   &memoryFigures{Streams: 40, Workers: 2, PerStream: 99.94},
	}

	nothing := fixedReport()
	nothing.command = "go run ./bench -run memory -out x.md -readme README.md"
	nothing.machine = machine{cpu: "unknown", cores: 1, virtual: true}
	nothing.took = 4 * time.Minute
	nothing.figures = figures{Scheduling: &schedulingFigures{Load: 0.85, Simulators: 3, Requests: 10, Systems: []schedulingSystem{
		{Name: "OllamaMax", Completed: 9, P99: 0.85}, {Name: "nginx least_conn", Completed: 0, P99: orInf(math.Inf(1))}}}}

	tests := []struct {
		golden string
		rep    *report
	}{
		{"summary-last-run.md", lastRun},
		{"summary-no-nginx.md", noNginx},
		{"summary-not-measured.md", nothing},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got := tt.rep.summary("docs/benchmarks.md")
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./bench -run TestSummaryGolden -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("summary differs from %s (-update rewrites it):\n%s", path, firstDiff(got, want))
			}
		})
	}
}

func TestSpliceSummary(t *testing.T) {
	begin := summaryBegin + " (generated) -->\n"
	end := summaryEnd + "\n"
	tests := []struct {
		name, readme, want, err string
	}{
		{name: "replaces what lies between",
			readme: "# x\n\n## Measured\n\n" + begin + "old\ntable\n\n" + end + "\nafter\n",
			want:   "# x\n\n## Measured\n\n" + begin + "new\n\n" + end + "\nafter\n"},
		{name: "empty section", readme: begin + end, want: begin + "new\n\n" + end},
		{name: "end marker is the last line without newline", readme: "a\n" + begin + "b\n" + summaryEnd,
			want: "a\n" + begin + "new\n\n" + summaryEnd},
		{name: "no begin marker", readme: "a\n" + end, err: "no line starts with"},
		{name: "no end marker", readme: begin + "a\n", err: "no line starts with"},
		{name: "marker not at the start of a line", readme: "see " + begin + end, err: "no line starts with"},
		{name: "two begin markers", readme: begin + begin + end, err: "two lines"},
		{name: "end before begin", readme: end + begin, err: "does not follow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spliceSummary([]byte(tt.readme), []byte("new\n"))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("spliceSummary error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("spliceSummary =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{thousands(0), "0"},
		{thousands(999.4), "999"},
		{thousands(999.5), "1,000"},
		{thousands(39127), "39,127"},
		{thousands(1234567.8), "1,234,568"},
		{thousands(-5046), "-5,046"},
		{runTime(5*time.Minute + 29*time.Second + 600*time.Millisecond), "5 min 30 s"},
		{runTime(4 * time.Minute), "4 min"},
		{runTime(59 * time.Second), "59 s"},
		{runTime(62 * time.Minute), "62 min"},
		{p99(4.6), "4.6 s"},
		{p99(0.85), "850 ms"},
		{roughly(1.96), "2 s"},
		{roughly(0.42), "420 ms"},
		{kib(100.2), "100 KiB"},
		{kib(13.6), "13.6 KiB"},
		{kib(99.94), "99.9 KiB"},
		{machine{cpu: "AMD EPYC", cores: 2, virtual: true}.short(), "2-core AMD EPYC VM"},
		{machine{cpu: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", cores: 4}.short(), "4-core Intel Xeon Platinum 8375C CPU @ 2.90GHz"},
		{machine{cpu: "unknown", cores: 2}.short(), "2-core machine"},
		{article("2-core AMD EPYC VM"), "a"},
		{article("8-core machine"), "an"},
		{article("11-core machine"), "an"},
		{article("16-core machine"), "a"},
		{article("112-core machine"), "a"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestOrInfJSON(t *testing.T) {
	for _, v := range []float64{0, 4.6, 21.66, math.Inf(1)} {
		b, err := orInf(v).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back orInf
		if err := back.UnmarshalJSON(b); err != nil || float64(back) != v {
			t.Errorf("%v → %s → %v, %v", v, b, back, err)
		}
	}
	if _, err := orInf(math.NaN()).MarshalJSON(); err == nil {
		t.Error("NaN marshaled without error")
	}
}
