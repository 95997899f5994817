package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
)

// TestTakenListenFailsLoudly runs the worker with a metrics address another
// process has: it must exit with status 1 within a second, before it joins
// the queue, with one line that says what is taken and how to change it.
func TestTakenListenFailsLoudly(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	natsURL := natstest.Start(t).ClientURL() // A real queue it could join.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	taken := ln.Addr().String()
	want := fmt.Sprintf("worker: cannot listen for metrics and health on %s: address already in use; choose another address with --listen or OLLAMAMAX_WORKER_LISTEN\n", taken)

	tests := []struct {
		name string
		args []string
		env  []string
	}{
		{"flag", []string{"--listen", taken}, nil},
		{"environment", nil, []string{"OLLAMAMAX_WORKER_LISTEN=" + taken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A worker that does not fail would run until killed here.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"--nats-url", natsURL, "--ollama", "http://127.0.0.1:1"}, tt.args...)...)
			cmd.Env = append(os.Environ(), "OLLAMAMAX_LOG_LEVEL=info", "OLLAMAMAX_LOG_FORMAT=json")
			cmd.Env = append(cmd.Env, tt.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			began := time.Now()
			err := cmd.Run()
			elapsed := time.Since(began)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("exit: %v, want status 1", err)
			}
			if got := out.String(); got != want {
				t.Errorf("output:\n%s\nwant the one line:\n%s", got, want)
			}
			if elapsed > time.Second {
				t.Errorf("took %s to fail, want under 1s", elapsed)
			}
		})
	}
}
