package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// withFleet starts simulated workers that answer at once.
func withFleet(t *testing.T) (*fleettest.Fleet, *cli) {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "llama3.2:latest"}, {Name: "nomic-embed-text:latest", Capabilities: []string{"embedding"}}}
	sim.TokensPerSecond, sim.TimeToFirstToken, sim.DefaultTokens, sim.Parallel = -1, -1, 3, 2
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Slots: 2, Sim: sim})
	return f, newCLI(t, f.Broker.ClientURL())
}

func writeLines(t *testing.T, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBatchGolden runs a small batch with one failing and one invalid line
// and checks what status and list print.
func TestBatchGolden(t *testing.T) {
	_, c := withFleet(t)
	file := writeLines(t, "requests.jsonl",
		`{"custom_id":"a","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"Why is the sky blue?"}}`,
		`{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}]}}`,
		`{"custom_id":"c","method":"POST","url":"/api/embed","body":{"model":"llama3.2","input":"not an embedding model"}}`,
		`{"custom_id":"d","method":"POST","url":"/v1/images/generations","body":{"model":"llama3.2"}}`,
		``,
		`{"custom_id":"e","method":"POST","url":"/v1/embeddings","body":{"model":"nomic-embed-text","input":"x"}}`,
	)
	code, out, errOut := c.run("batch", "submit", file)
	id := strings.TrimSpace(out)
	if code != exitOK || !strings.HasPrefix(id, "batch_") ||
		!strings.Contains(errOut, `requests.jsonl: line 4 (custom_id "d"): unknown url "/v1/images/generations"`) ||
		!strings.Contains(errOut, "queued 4 requests of requests.jsonl as "+id+" (1 invalid line skipped)") {
		t.Fatalf("submit: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, _, errOut = c.run("batch", "wait", id)
	if want := id + " done: 3 done, 1 failed (of 4 requests) in 0s"; code != exitFailed || !strings.Contains(errOut, want) {
		t.Fatalf("wait: exit %d, stderr %q; want %d and %q", code, errOut, exitFailed, want)
	}
	c.now = func() time.Time { return clock.Add(2 * time.Minute) }
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"batch_status.txt", []string{"batch", "status", id}},
		{"batch_status.json", []string{"batch", "status", "--json", id}},
		{"batch_list.txt", []string{"batch", "list"}},
		{"batch_list.json", []string{"batch", "list", "--json"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			code, out, errOut := c.run(tt.args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, tt.golden, out)
		})
	}
	// The results: one line per request, the failed one marked.
	code, out, errOut = c.run("batch", "results", id)
	if code != exitOK || !strings.Contains(errOut, "1 of 4 requests failed") {
		t.Fatalf("results: exit %d, stderr %s", code, errOut)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int             `json:"status_code"`
				Body       json.RawMessage `json:"body"`
			} `json:"response"`
			Error *struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result line %q: %v", line, err)
		}
		got[r.CustomID] = fmt.Sprintf("%d %v", r.Response.StatusCode, r.Error)
	}
	// c: Ollama 0.30+ loads any model for /api/embed and answers 501 "This
	// server does not support embeddings" for one that does not embed.
	want := map[string]string{"a": "200 <nil>", "b": "200 <nil>", "c": "501 &{server_error}", "e": "200 <nil>"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("results by custom_id = %v, want %v", got, want)
	}
}

// TestBatchFlow is the README's flow: submit from stdin, wait with
// progress, collect the results; then what scripts see for the mistakes.
func TestBatchFlow(t *testing.T) {
	_, c := withFleet(t)
	var lines []string
	for i := range 200 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"q%d","method":"POST","url":"/api/chat","body":{"model":"llama3.2","messages":[{"role":"user","content":"%d"}]}}`, i, i))
	}
	c.every = time.Millisecond // Plain progress lines as often as there is news.
	code, out, errOut := c.runIn(t.Context(), strings.Join(lines, "\n"), "--server", c.server, "batch", "submit", "--id", "flow", "-")
	if code != exitOK || out != "flow\n" {
		t.Fatalf("submit: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	c.terminal = true
	code, _, errOut = c.run("batch", "wait", "flow")
	if code != exitOK || !strings.Contains(errOut, "flow done: 200 done, 0 failed (of 200 requests)") {
		t.Fatalf("wait: exit %d, stderr %q", code, errOut)
	}
	c.terminal = false
	code, out, errOut = c.run("batch", "results", "flow")
	if n := strings.Count(out, "\n"); code != exitOK || n != 200 {
		t.Fatalf("results: exit %d, %d lines; stderr %s", code, n, errOut)
	}
	for i := range 200 {
		if !strings.Contains(out, fmt.Sprintf(`"custom_id":"q%d"`, i)) {
			t.Fatalf("no result for q%d", i)
		}
	}

	dups := writeLines(t, "dups.jsonl", lines[0], lines[1], lines[0])
	other := writeLines(t, "other.jsonl", lines[0], lines[1])
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"submit again", []string{"batch", "submit", "--id", "flow", "-"}, exitOK, "flow was submitted before: nothing to queue"},
		{"unknown batch", []string{"batch", "status", "batch_nope"}, exitFailed, "no such batch: batch_nope (see 'ollamaq batch list')"},
		{"results of an unknown batch", []string{"batch", "results", "nope"}, exitFailed, "no such batch: nope"},
		{"repeated custom_ids", []string{"batch", "submit", dups}, exitFailed, "repeated custom_id: 1 line repeats an earlier line's custom_id; nothing was queued"},
		{"cancel a done batch", []string{"batch", "cancel", "flow"}, exitFailed, "flow is already done: nothing to cancel"},
		{"another file under the same ID", []string{"batch", "submit", "--id", "flow", other}, exitFailed, "choose another ID"},
		{"strict", []string{"batch", "submit", "--strict", writeLines(t, "bad.jsonl", lines[0], "{")}, exitFailed,
			"invalid lines: 1 of 2 lines is not a valid request; nothing was queued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := c.runIn(t.Context(), strings.Join(lines, "\n"), append([]string{"--server", c.server}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d with %q", code, errOut, tt.wantCode, tt.wantErr)
			}
		})
	}
	code, out, _ = c.run("batch", "list", "--json")
	if code != exitOK || strings.Count(out, `"id"`) != 1 {
		t.Errorf("the refused files left batches behind:\n%s", out)
	}
}

// TestBatchExpires submits a batch with a line for a model nobody serves and
// a one-second window, then looks at it after the window (the commands'
// clock moved on): status says expired, the line has the error
// batch_expired, and the exit codes say the batch did not complete.
func TestBatchExpires(t *testing.T) {
	f, c := withFleet(t)
	file := writeLines(t, "late.jsonl",
		`{"custom_id":"served","url":"/api/generate","body":{"model":"llama3.2","prompt":"Hi"}}`,
		`{"custom_id":"nobody","url":"/api/generate","body":{"model":"nobody-serves","prompt":"Hi"}}`,
	)
	if code, _, errOut := c.run("batch", "submit", "--completion-window", "soon", file); code != exitUsage ||
		!strings.Contains(errOut, `--completion-window: completion window "soon" is not a duration such as "24h"`) {
		t.Fatalf("bad window: exit %d, %s", code, errOut)
	}
	code, out, errOut := c.run("batch", "submit", "--completion-window", "1s", file)
	id := strings.TrimSpace(out)
	if code != exitOK || !strings.Contains(errOut, "no worker has served nobody-serves:latest yet; its 1 requests wait until one does, at most the completion window (1s)") {
		t.Fatalf("submit: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	f.WaitFor("the served line's answer", func() bool {
		_, out, _ := c.run("batch", "status", "--json", id)
		return strings.Contains(out, `"done": 1`)
	})

	c.now = func() time.Time { return clock.Add(time.Minute) } // The window is long over.
	code, _, errOut = c.run("batch", "wait", id)
	if want := id + " expired: 1 done, 0 failed, 1 expired (completion window 1s) (of 2 requests)"; code != exitFailed || !strings.Contains(errOut, want) {
		t.Fatalf("wait: exit %d, stderr %q; want %d and %q", code, errOut, exitFailed, want)
	}
	c.now = func() time.Time { return clock.Add(2 * time.Minute) }
	code, out, errOut = c.run("batch", "status", id)
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	golden(t, "batch_status_expired.txt", out)
	code, out, errOut = c.run("batch", "results", id)
	if code != exitFailed || !strings.Contains(errOut, id+" expired: wrote 2 results, 1 of them batch_expired") {
		t.Fatalf("results: exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{`"custom_id":"nobody","response":null,"error":{"code":"batch_expired","message":"batch expired: the request did not finish within the batch's completion window of 1s"}`,
		`"custom_id":"served","response":{"status_code":200`} {
		if !strings.Contains(out, want) {
			t.Errorf("results lack %s:\n%s", want, out)
		}
	}
	if code, _, errOut := c.run("batch", "cancel", id); code != exitFailed || !strings.Contains(errOut, id+" is already expired: nothing to cancel") {
		t.Errorf("cancel: exit %d, %s", code, errOut)
	}
}
