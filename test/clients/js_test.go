package clients_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
)

// TestJSClients runs the node tests in e2e/ (ollama-js and openai-node)
// against a fleet. They need node and `npm ci --prefix e2e`; without them the
// test skips, except in CI (CI=true), which must run them.
func TestJSClients(t *testing.T) {
	node, dir := nodeAndE2E(t)
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) {
			f := startFleet(t, fleettest.Options{Auth: m.Auth})
			// No file arguments: node then runs e2e's *.test.mjs files, and its
			// discovery (unlike a directory argument) means the same on node 20
			// and 22+. keys.test.mjs skips itself without keys.
			runJS(t, node, dir, []string{"OLLAMAMAX_URL=" + f.URL, "OLLAMAMAX_SIM_URL=" + f.SimURLs[0].String()})
		})
	}
}

// TestJSClientsKeys runs e2e/keys.test.mjs against a fleet that requires API
// keys, with two dispatchers, and the keys it needs: one of each role, one
// for the embedding model only, one of 120 requests a minute, and one
// revoked, which both dispatchers refuse within a second before node starts.
func TestJSClientsKeys(t *testing.T) {
	node, dir := nodeAndE2E(t)
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) {
			f := startFleet(t, fleettest.Options{Auth: m.Auth, Keys: true})
			second := f.StartDispatcher("dtest2")
			_, admin := f.CreateKey(apikey.Key{Name: "js-admin", Tenant: "ops", Role: apikey.Admin})
			_, user := f.CreateKey(apikey.Key{Name: "js-user", Tenant: "acme", Role: apikey.User})
			_, limited := f.CreateKey(apikey.Key{Name: "js-embedder", Tenant: "acme", Role: apikey.User, Models: []string{embedModel}})
			_, rpm := f.CreateKey(apikey.Key{Name: "js-burst", Tenant: "acme", Role: apikey.User, RPM: 120})
			k, revoked := f.CreateKey(apikey.Key{Name: "js-leaver", Tenant: "acme", Role: apikey.User})
			at := time.Now()
			if _, err := f.Keys().Revoke(t.Context(), k.ID, at); err != nil {
				t.Fatal(err)
			}
			// In force on both dispatchers when CreateKey returned, the key is
			// refused by both within a second of the revocation.
			for _, base := range []string{f.URL, second} {
				fleettest.WaitFor(t, time.Until(at.Add(time.Second)), "the revoked key to be refused by "+base, func() bool {
					status, _ := send(t, "GET", base+"/api/tags", revoked, "")
					return status == http.StatusUnauthorized
				})
			}
			runJS(t, node, dir, []string{
				"OLLAMAMAX_URL=" + f.URL,
				"OLLAMAMAX_URL_2=" + second,
				"OLLAMAMAX_KEY_ADMIN=" + admin,
				"OLLAMAMAX_KEY_USER=" + user,
				"OLLAMAMAX_KEY_LIMITED=" + limited,
				"OLLAMAMAX_KEY_RPM=" + rpm,
				"OLLAMAMAX_KEY_REVOKED=" + revoked,
			}, "keys.test.mjs")
		})
	}
}

// nodeAndE2E returns the node binary and the e2e/ directory, skipping the
// test (failing it in CI) when node or e2e/node_modules is missing.
func nodeAndE2E(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		skipOutsideCI(t, "node is not installed, so the JavaScript client tests in e2e/ cannot run")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		skipOutsideCI(t, "e2e/node_modules is missing: run `npm ci --prefix e2e` to install the JavaScript clients")
	}
	return node, dir
}

// runJS runs node --test in dir on files (none: every *.test.mjs), with env
// added to the environment.
func runJS(t *testing.T, node, dir string, env []string, files ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"--test", "--test-reporter=spec"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
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
