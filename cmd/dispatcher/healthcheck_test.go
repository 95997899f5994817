package main

import (
	"bytes"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
)

// TestHealthcheckCommand runs 'dispatcher healthcheck' against a running
// dispatcher, with the address from the flag and from the variable the
// dispatcher reads: exit status 0 and the endpoint's answer while it serves,
// 1 with the reason once it is gone.
func TestHealthcheckCommand(t *testing.T) {
	bin := build(t)
	addr := natstest.FreeAddr(t)
	cmd := exec.Command(bin, "--listen", addr, "--nats-listen", natstest.FreeAddr(t), "--store-dir", t.TempDir())
	cmd.Env = environ()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		if cmd.Process.Kill() == nil { // Its only state is in a temporary directory.
			<-exited
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the dispatcher was not ready within 30s")
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}

	check := func(env []string, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		c := exec.Command(bin, append([]string{"healthcheck"}, args...)...)
		c.Env = append(environ(), env...)
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
	tests := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stdout string
	}{
		{name: "flag", args: []string{"--listen", addr}, stdout: "ready"},
		{name: "variable", env: []string{"OLLAMAMAX_LISTEN=" + addr}, stdout: "ready"},
		{name: "live", env: []string{"OLLAMAMAX_LISTEN=" + addr}, args: []string{"--live"}, stdout: "ok"},
		{name: "HTTPS where the API serves HTTP", env: []string{"OLLAMAMAX_LISTEN=" + addr, "OLLAMAMAX_TLS_CERT=api.pem"}, code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := check(tt.env, tt.args...)
			if code != tt.code || stdout != tt.stdout {
				t.Fatalf("exit %d, stdout %q (stderr %q); want exit %d, stdout %q", code, stdout, stderr, tt.code, tt.stdout)
			}
		})
	}

	stop()
	code, stdout, stderr := check(nil, "--listen", addr)
	want := "dispatcher healthcheck: GET http://" + addr + "/readyz: dial tcp " + addr + ": connect: connection refused"
	if code != 1 || stdout != "" || stderr != want {
		t.Fatalf("after the dispatcher exited: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, stderr, want)
	}
}
