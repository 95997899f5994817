package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommittedDocs fails when README.md's summary, docs/benchmarks.md or
// the plot differs from what docs/benchmarks.json renders: someone edited
// one by hand, or changed a template without `make bench-docs`.
func TestCommittedDocs(t *testing.T) {
	// As `make bench-docs` renders them.
	cfg := config{from: "../docs/benchmarks.json", out: "../docs/benchmarks.md", svg: "../docs/bench-scheduling.svg", readme: "../README.md"}
	res, err := readResults(cfg.from)
	if err != nil {
		t.Fatal(err)
	}
	files, err := renderFiles(cfg, res.report())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("rendered %d files, want 3", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f.path), func(t *testing.T) {
			committed, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.data, committed) {
				t.Errorf("%s is not what docs/benchmarks.json renders; run `make bench-docs` (or `make bench`):\n%s",
					strings.TrimPrefix(f.path, "../"), firstDiff(committed, f.data))
			}
		})
	}
}
