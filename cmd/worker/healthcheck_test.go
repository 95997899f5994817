package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// TestHealthcheckCommand runs 'worker healthcheck' against a running worker
// (a real NATS server, a simulated Ollama), with the address from the flag
// and from the variable the worker reads: exit status 0 and the endpoint's
// answer while it serves; 1 with the reason when its Ollama is gone
// (/readyz fails, /healthz does not) and when the worker is gone.
func TestHealthcheckCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sim := httptest.NewServer(ollamasim.New(ollamasim.DefaultConfig()))
	t.Cleanup(sim.Close)
	addr := natstest.FreeAddr(t)
	env := append(os.Environ(), "NATS_CREDS=", "OLLAMAMAX_WORKER_ID=", "OLLAMAMAX_LOG_LEVEL=info", "OLLAMAMAX_LOG_FORMAT=json")
	cmd := exec.Command(bin, "--nats-url", natstest.Start(t).ClientURL(), "--ollama", sim.URL, "--listen", addr)
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		if cmd.Process.Kill() == nil { // It holds no state of its own.
			<-exited
		}
	}
	t.Cleanup(stop)
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the worker's /readyz did not answer %d within 30s", want)
			}
			time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
		}
	}
	waitFor(http.StatusOK)

	check := func(extra []string, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		c := exec.Command(bin, append([]string{"healthcheck"}, args...)...)
		c.Env = append(env, extra...)
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			code = exit.ExitCode()
		default:
			t.Fatal(err)
		}
		return code, strings.TrimSpace(out.String()), strings.TrimSpace(errOut.String())
	}
	type result struct {
		code           int
		stdout, stderr string // stderr: its start
	}
	expect := func(t *testing.T, extra []string, args []string, want result) {
		t.Helper()
		code, stdout, stderr := check(extra, args...)
		if code != want.code || stdout != want.stdout || !strings.HasPrefix(stderr, want.stderr) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr starting %q",
				code, stdout, stderr, want.code, want.stdout, want.stderr)
		}
	}
	ready := result{stdout: "ready"}
	t.Run("flag", func(t *testing.T) { expect(t, nil, []string{"--listen", addr}, ready) })
	t.Run("variable", func(t *testing.T) { expect(t, []string{"OLLAMAMAX_WORKER_LISTEN=" + addr}, nil, ready) })
	t.Run("the worker's config file", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "worker.conf")
		if err := os.WriteFile(conf, []byte("slots=4\nlisten="+addr+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		expect(t, []string{"OLLAMAMAX_CONFIG=" + conf}, nil, ready)
	})
	t.Run("no listener", func(t *testing.T) {
		expect(t, nil, []string{"--listen", ""}, result{code: 1, stderr: "worker healthcheck: the worker serves no /readyz"})
	})

	sim.Close()
	waitFor(http.StatusServiceUnavailable)
	t.Run("Ollama gone: not ready", func(t *testing.T) {
		expect(t, nil, []string{"--listen", addr}, result{code: 1, stderr: "worker healthcheck: GET http://" + addr + "/readyz: 503 Service Unavailable: "})
	})
	t.Run("Ollama gone: live", func(t *testing.T) { expect(t, nil, []string{"--listen", addr, "--live"}, result{stdout: "ok"}) })

	stop()
	t.Run("worker gone", func(t *testing.T) {
		expect(t, nil, []string{"--listen", addr}, result{code: 1,
			stderr: "worker healthcheck: GET http://" + addr + "/readyz: dial tcp " + addr + ": connect: connection refused"})
	})
}
