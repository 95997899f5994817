// Package runscript_test runs scripts/run.sh, what `make run` runs, with the
// built binaries in front of the simulator (cmd/ollamasim), as a new user
// would. Every address it uses comes from the environment and is a free
// port, so it runs beside any other OllamaMax on the machine.
package runscript_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
)

// TestRunRestartsADeadWorkerAndKeepsServing kills the worker that run.sh
// started: the dispatcher keeps answering, the script says the worker
// exited and starts it again after a second, and jobs run again. Ctrl-C
// (SIGINT to the whole process group, as a terminal sends it) then stops
// everything.
func TestRunRestartsADeadWorkerAndKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	if runtime.GOOS != "linux" {
		t.Skip("finds the script's children in /proc")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("run.sh needs curl")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/dispatcher", "./cmd/worker", "./cmd/ollamasim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	// A simulated Ollama, and a NATS server of the test's own: run.sh's
	// dispatcher and worker both use NATS_URL.
	sim := "127.0.0.1:" + natstest.FreePort(t)
	simCmd := exec.Command(filepath.Join(bin, "ollamasim"), "--listen", sim, "--models", "llama3.2", "--tps", "-1", "--ttft", "0", "--tokens", "3")
	if err := simCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = simCmd.Process.Kill(); _ = simCmd.Wait() })
	nats := natstest.Start(t)

	listen := "127.0.0.1:" + natstest.FreePort(t)
	home := t.TempDir()
	var out syncBuffer
	script := exec.Command(bash, filepath.Join(root, "scripts", "run.sh"))
	script.Dir = root
	script.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_STATE_HOME=" + home, "BIN=" + bin,
		"OLLAMAMAX_LISTEN=" + listen,
		"OLLAMAMAX_NATS_LISTEN=127.0.0.1:" + natstest.FreePort(t),
		"OLLAMAMAX_STORE_DIR=" + filepath.Join(home, "jetstream"),
		"OLLAMAMAX_WORKER_LISTEN=127.0.0.1:" + natstest.FreePort(t),
		"NATS_URL=" + nats.ClientURL(),
		"OLLAMA_HOST=http://" + sim,
	}
	script.Stdout, script.Stderr = &out, &out
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Its own group, as a terminal's foreground job.
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- script.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-script.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("run.sh output:\n%s", out.String())
		}
	})

	base := "http://" + listen
	// run.sh says it is running once both processes answer; a process that
	// dies before that is a failed start, which ends the script.
	fleettest.WaitFor(t, time.Minute, "run.sh to say it is running", func() bool {
		return strings.Contains(out.String(), "If the worker exits, it is started again.")
	})
	fleettest.WaitFor(t, time.Minute, "a job through run.sh's dispatcher and worker", func() bool { return generate(base) == nil })
	first := child(t, script.Process.Pid, "worker")
	dispatcher := child(t, script.Process.Pid, "dispatcher")
	if first == 0 || dispatcher == 0 {
		t.Fatalf("run.sh's children: worker %d, dispatcher %d", first, dispatcher)
	}

	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, 10*time.Second, "run.sh to say the worker exited", func() bool {
		return strings.Contains(out.String(), "worker exited (status 137); restarting in 1s")
	})
	if err := ollamaRunning(base); err != nil {
		t.Fatalf("the dispatcher stopped answering with the worker dead: %v", err)
	}
	fleettest.WaitFor(t, 30*time.Second, "a new worker", func() bool {
		w := child(t, script.Process.Pid, "worker")
		return w != 0 && w != first
	})
	fleettest.WaitFor(t, 30*time.Second, "a job through the new worker", func() bool { return generate(base) == nil })

	// Ctrl-C.
	if err := syscall.Kill(-script.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("run.sh ended with %v after Ctrl-C, want exit status 130", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run.sh still runs 40s after Ctrl-C")
	}
	for _, pid := range []int{dispatcher, child(t, script.Process.Pid, "worker")} {
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still runs after run.sh ended", pid)
		}
	}
	if err := ollamaRunning(base); err == nil {
		t.Error("the dispatcher still answers after run.sh ended")
	}
}

// generate runs one job through the dispatcher.
func generate(base string) error {
	resp, err := http.Post(base+"/api/generate", "application/json",
		strings.NewReader(`{"model":"llama3.2","prompt":"Hello","stream":false}`))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// ollamaRunning asks the dispatcher what Ollama answers on /.
func ollamaRunning(base string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/")
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "Ollama is running" {
		return fmt.Errorf("%s %q", resp.Status, b)
	}
	return nil
}

// child returns the pid of the child of ppid running name, or 0.
func child(t *testing.T, ppid int, name string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // Gone meanwhile.
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		open, close := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(string(stat[close+1:]))
		if len(fields) < 2 || string(stat[open+1:close]) != name || fields[0] == "Z" {
			continue
		}
		if p, err := strconv.Atoi(fields[1]); err == nil && p == ppid {
			return pid
		}
	}
	return 0
}

// syncBuffer is a bytes.Buffer for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
