//go:build linux

package realollama_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/realollama"
)

func post(t *testing.T, url, body string, v any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, b)
	}
}

// cpusAllowed reads a process's affinity from /proc.
func cpusAllowed(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in /proc/%d/status", pid)
	return ""
}

// children lists the processes whose parent is pid, forked by any of its
// threads.
func children(t *testing.T, pid int) []int {
	t.Helper()
	files, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // The thread ended.
		}
		for _, field := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(field) // The kernel writes numbers.
			out = append(out, n)
		}
	}
	return out
}

// TestServer starts a real Ollama with the default models and checks what
// the suite relies on: the version, the models and their capabilities,
// generation to num_predict, embeddings, pinning of the server and its
// runner to one core, and that stopping it leaves no process behind.
func TestServer(t *testing.T) {
	// Core 0: test/realollama's server, which may run at the same time in
	// another test process, is on core 1.
	s := realollama.Start(t, realollama.Options{CPU: 0})

	if os.Getenv(realollama.EnvBinary) == "" {
		var v struct{ Version string }
		resp, err := http.Get(s.URL + "/api/version")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if v.Version != realollama.Version {
			t.Errorf("version %q, want %q", v.Version, realollama.Version)
		}
	}

	var tags struct {
		Models []struct {
			Name         string
			Capabilities []string
		}
	}
	resp, err := http.Get(s.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	caps := map[string][]string{}
	for _, m := range tags.Models {
		slices.Sort(m.Capabilities)
		caps[m.Name] = m.Capabilities
	}
	want := map[string][]string{
		"tiny:latest":       {"completion"},
		"tiny-long:latest":  {"completion"},
		"tiny-tools:latest": {"completion", "tools"},
		"tiny-embed:latest": {"embedding"},
	}
	for name, w := range want {
		if got := caps[name]; !slices.Equal(got, w) {
			t.Errorf("%s: capabilities %v, want %v", name, got, w)
		}
	}

	var gen struct {
		Response   string `json:"response"`
		Done       bool   `json:"done"`
		DoneReason string `json:"done_reason"`
		EvalCount  int    `json:"eval_count"`
	}
	post(t, s.URL+"/api/generate", `{"model":"tiny-long","prompt":"hi","stream":false,"options":{"num_predict":40,"seed":1}}`, &gen)
	if !gen.Done || gen.DoneReason != "length" || gen.EvalCount != 40 || gen.Response == "" {
		t.Errorf("generate to num_predict 40: done %v, done_reason %q, eval_count %d, %d bytes; want true, length, 40, some",
			gen.Done, gen.DoneReason, gen.EvalCount, len(gen.Response))
	}

	var emb struct{ Embeddings [][]float64 }
	post(t, s.URL+"/api/embed", `{"model":"tiny-embed","input":["a","b"]}`, &emb)
	if len(emb.Embeddings) != 2 || len(emb.Embeddings[0]) != 64 {
		t.Errorf("embed: %d vectors of %d, want 2 of 64", len(emb.Embeddings), len(emb.Embeddings[0]))
	}

	pid := s.PID()
	runners := children(t, pid)
	if len(runners) == 0 {
		t.Fatal("no runner process under the server after a generate")
	}
	if s.CPU >= 0 {
		wantCPU := strconv.Itoa(s.CPU)
		if got := cpusAllowed(t, pid); got != wantCPU {
			t.Errorf("server affinity %q, want %q", got, wantCPU)
		}
		for _, r := range runners {
			if got := cpusAllowed(t, r); got != wantCPU {
				t.Errorf("runner %d affinity %q, want %q", r, got, wantCPU)
			}
		}
	} else {
		t.Log("the server is not pinned here; affinity not checked")
	}

	s.Stop()
	for _, p := range append([]int{pid}, runners...) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Kill(p, 0)
			if errors.Is(err, syscall.ESRCH) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("process %d still there 5s after Stop (kill 0: %v)", p, err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	s.Stop() // Idempotent.
}
