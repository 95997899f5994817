package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fixedReport is a report as a run leaves it, with a failed section, a
// plot, and figures with every kind of value.
func fixedReport() *report {
	return &report{
		machine: machine{cpu: "AMD EPYC", cores: 2, virtual: true, memory: "23.5 GiB", kernel: "Linux 6.18.44",
			goVer: "go1.26.8", nginx: "nginx/1.22.1", loadAvg: "0.29"},
		command: "make bench",
		started: time.Date(2026, 11, 26, 7, 17, 3, 250_000_000, time.UTC),
		took:    5*time.Minute + 29*time.Second + 612_345*time.Microsecond,
		loadEnd: "0.26",
		sections: []*section{
			{name: "throughput", title: "Throughput <ceiling> & more", design: []string{"Closed loop, `64` in flight."},
				tables: []table{{header: []string{"path", "jobs/s"}, rows: [][]string{{"a|b", "5046"}, {"raw", "∞"}}}},
				notes:  []string{"a note"}, took: 14*time.Second + 3*time.Millisecond},
			{name: "scheduling", title: "Scheduling", tables: []table{{caption: "The fleet", header: []string{"x"}, rows: [][]string{{"big"}}, left: true}},
				plot:      []series{{name: "OllamaMax", color: "#1f77b4", values: []float64{0.25, 1.0934567891, 4.6}, total: 4}},
				plotTitle: "Mixed fleet", took: time.Minute},
			{name: "memory", title: "Memory", err: errors.New("first line\nsecond line"), took: 4 * time.Minute},
		},
		figures: fixedFigures(),
	}
}

// TestResultsRoundTrip: what -from renders from a saved run is what the run
// itself rendered.
func TestResultsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := config{json: filepath.Join(dir, "benchmarks.json"), out: filepath.Join(dir, "benchmarks.md"),
		svg: filepath.Join(dir, "bench-scheduling.svg"), readme: filepath.Join(dir, "README.md")}
	readme := []byte("# x\n\n" + summaryBegin + " -->\n" + summaryEnd + "\n")
	if err := os.WriteFile(cfg.readme, readme, 0o644); err != nil {
		t.Fatal(err)
	}
	direct, err := renderFiles(cfg, fixedReport())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range direct {
		if f.path == cfg.json {
			if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	res, err := readResults(cfg.json)
	if err != nil {
		t.Fatal(err)
	}
	again, err := renderFiles(cfg, res.report())
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(direct) || len(direct) != 4 {
		t.Fatalf("rendered %d files from the run and %d from its results, want 4 each", len(direct), len(again))
	}
	for i := range direct {
		if got, want := again[i], direct[i]; got.path != want.path || !bytes.Equal(got.data, want.data) {
			t.Errorf("%s rendered from the results differs from the run's:\n%s", want.path, firstDiff(got.data, want.data))
		}
	}
}

func TestReadResultsRefuses(t *testing.T) {
	tests := []struct {
		name, json string
	}{
		{"another format", `{"format":2}`},
		{"an unknown field", `{"format":1,"colour":"red"}`},
		{"not JSON", `format: 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json")
			if err := os.WriteFile(path, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := readResults(path); err == nil {
				t.Errorf("readResults(%s) = nil error", tt.json)
			}
		})
	}
}

// firstDiff shows the first line where got and want differ.
func firstDiff(got, want []byte) string {
	g, w := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
	for i := range max(len(g), len(w)) {
		var gl, wl []byte
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if !bytes.Equal(gl, wl) {
			return fmt.Sprintf("line %d:\n got:  %s\n want: %s", i+1, gl, wl)
		}
	}
	return "(equal)"
}
