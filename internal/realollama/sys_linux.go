package realollama

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// lock takes an exclusive lock on the file at path, waiting for it; the
// returned func releases it. A process that dies releases its locks.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		_ = f.Close() // The lock's error is the one to report.
		return nil, err
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN) // Closing releases it anyway.
		_ = f.Close()
	}, nil
}

// procAttr puts the server in its own process group, so that stopping it
// stops its llama-server runners too, and sends it SIGTERM (which it
// handles by stopping them) should the test process die first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// signalGroup sends sig to the process group of the server led by pid.
func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// startPinned starts cmd on one core: the cpu-th (modulo their number) of
// the cores this process may run on. The child inherits the affinity of the
// thread that forks it, so the fork runs on a locked thread that holds that
// one core for the moment of the fork; every thread the server and its
// runners make inherit it in turn. pinned is the core, or -1 with the
// reason when pinning did not work and cmd started unpinned.
func startPinned(cmd *exec.Cmd, cpu int) (pinned int, why string, err error) {
	type result struct {
		pinned int
		why    string
		err    error
	}
	done := make(chan result, 1)
	// Its own goroutine, so that a thread whose mask could not be restored
	// ends with it instead of running other goroutines on one core.
	go func() {
		runtime.LockOSThread()
		var old unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Sprintf("sched_getaffinity: %v", err), cmd.Start()}
			return
		}
		n := old.Count()
		if n == 0 {
			runtime.UnlockOSThread()
			done <- result{-1, "no core in this process's affinity mask", cmd.Start()}
			return
		}
		core, seen := -1, 0
		for c := 0; core < 0; c++ {
			if old.IsSet(c) {
				if seen == ((cpu%n)+n)%n {
					core = c
				}
				seen++
			}
		}
		var one unix.CPUSet
		one.Set(core)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Sprintf("sched_setaffinity: %v", err), cmd.Start()}
			return
		}
		err := cmd.Start()
		if rerr := unix.SchedSetaffinity(0, &old); rerr != nil {
			// Left locked: the thread exits with this goroutine. Pdeathsig
			// then stops the server, so report the start as failed.
			if err == nil {
				_ = signalGroup(cmd.Process.Pid, syscall.SIGKILL)
				_ = cmd.Wait() // It was killed: its status says nothing new.
			}
			done <- result{-1, "", fmt.Errorf("restore the thread's affinity: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{core, "", err}
	}()
	r := <-done
	return r.pinned, r.why, r.err
}
