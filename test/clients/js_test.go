package clients_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
)

// TestJSClients runs the node tests in e2e/ (ollama-js and openai-node)
// against a fleet. They need node and `npm ci --prefix e2e`; without them the
// test skips, except in CI (CI=true), which must run them.
func TestJSClients(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("..", "..", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skipOutsideCI(t, "node is not installed, so the JavaScript client tests in e2e/ cannot run")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		skipOutsideCI(t, "e2e/node_modules is missing: run `npm ci --prefix e2e` to install the JavaScript clients")
	}

	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { runJS(t, node, dir, m.Auth) })
	}
}

// runJS runs node --test in dir against a fleet.
func runJS(t *testing.T, node, dir string, auth bool) {
	f := startFleet(t, fleettest.Options{Auth: auth})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// No file arguments: node then runs e2e's *.test.mjs files, and its
	// discovery (unlike a directory argument) means the same on node 20 and 22+.
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"OLLAMAMAX_URL="+f.URL,
		"OLLAMAMAX_SIM_URL="+f.SimURLs[0].String(),
		"NO_COLOR=1",
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second // The runner's per-file children may outlive it on a timeout.
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("node --test in e2e/ did not finish within 2 minutes:\n%s", out.Bytes())
	}
	if err != nil {
		t.Fatalf("node --test in e2e/: %v\n%s", err, out.Bytes())
	}
	t.Logf("node --test in e2e/ passed in %s:\n%s", time.Since(start).Round(time.Millisecond), out.Bytes())
}

// skipOutsideCI skips the test, or fails it when CI=true.
func skipOutsideCI(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + " (CI=true: the client tests must run in CI)")
	}
	t.Skip(reason)
}
