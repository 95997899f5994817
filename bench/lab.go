package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lab owns everything a run starts: a temporary directory for binaries,
// stores, configs and logs, and every child process. Close kills what is
// still running and removes the directory.
type lab struct {
	dir      string
	bins     map[string]string // binary name -> path
	nginx    string            // path to nginx, "" when not available
	progress io.Writer
	keep     bool

	help map[string]string // binary name -> its -h output, to see which flags it has

	mu      sync.Mutex
	procs   []*proc
	closers []func() // run by stopAll before the processes stop
	seq     int
}

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string        // file with its stdout and stderr
	done chan struct{} // closed when it has exited
	err  error         // its exit error, once done is closed
}

// binaries the driver runs.
var binaryNames = []string{"dispatcher", "worker", "ollamasim"}

// newLab creates the temporary directory and finds or builds the binaries.
func newLab(ctx context.Context, cfg config) (*lab, error) {
	dir, err := os.MkdirTemp("", "ollamamax-bench-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	l := &lab{dir: dir, bins: map[string]string{}, help: map[string]string{}, progress: cfg.progress, keep: cfg.keep}
	binDir := cfg.binDir
	if binDir == "" {
		binDir = filepath.Join(dir, "bin")
		if err := build(ctx, binDir, cfg.buildFlags, cfg.progress); err != nil {
			l.Close()
			return nil, err
		}
	}
	for _, name := range binaryNames {
		p, err := filepath.Abs(filepath.Join(binDir, name))
		if err == nil {
			_, err = os.Stat(p)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("binary %s: %w (run make build, or leave -bin empty to build)", name, err)
		}
		l.bins[name] = p
		out, _ := exec.CommandContext(ctx, p, "-h").CombinedOutput() // -h exits 0 or 2; the text is what matters.
		l.help[name] = string(out)
	}
	l.nginx = findNginx(cfg.nginx)
	return l, nil
}

// build compiles the binaries into dir with go build, from the module root.
func build(ctx context.Context, dir string, flags []string, progress io.Writer) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "building %s into %s\n", strings.Join(binaryNames, ", "), dir)
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", dir+string(filepath.Separator))
	for _, name := range binaryNames {
		args = append(args, "./cmd/"+name)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the OllamaMax module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// findNginx returns the nginx binary to use: want itself, or when want is
// empty the one on PATH or in /usr/sbin; "" when there is none or want is "off".
func findNginx(want string) string {
	switch want {
	case "off":
		return ""
	case "":
		if p, err := exec.LookPath("nginx"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx"
		}
		return ""
	}
	return want
}

// hasFlag reports whether binary name has the flag, so that the driver works
// with binaries from before and after a flag was added. The flag package
// prints "-name type" for most flags and "-name" alone for a bool.
func (l *lab) hasFlag(name, flag string) bool {
	h := l.help[name]
	return strings.Contains(h, "\n  -"+flag+" ") || strings.Contains(h, "\n  -"+flag+"\n")
}

// path returns a fresh path in the lab directory for name.
func (l *lab) path(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return filepath.Join(l.dir, fmt.Sprintf("%02d-%s", l.seq, name))
}

// start runs bin with args as a child process whose output goes to a log
// file. The child is killed if the driver dies (Pdeathsig).
func (l *lab) start(name, bin string, args ...string) (*proc, error) {
	logPath := l.path(name + ".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	// Setpgid keeps a terminal's Ctrl-C away from the children: the driver
	// stops them itself. Pdeathsig kills them if the driver is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close() // Nothing was written.
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close() // The child is gone; its log is complete.
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// childEnv is the driver's environment without the variables that would
// change the children's flag defaults (OLLAMA_HOST, NATS_URL, OLLAMAMAX_*):
// every setting the benchmark depends on is passed as a flag.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OLLAMA") || strings.HasPrefix(kv, "NATS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// pid is the child's process ID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // It may have exited meanwhile.
	<-p.done
}

// stop asks the process to end (SIGTERM), then kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // It may have exited meanwhile.
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopAll stops every process still running, all at once, and waits.
func (l *lab) stopAll() {
	l.mu.Lock()
	procs, closers := l.procs, l.closers
	l.procs, l.closers = nil, nil
	l.mu.Unlock()
	for _, f := range closers {
		f()
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(3 * time.Second) })
	}
	wg.Wait()
}

// Close stops every process and removes the lab directory (unless keep).
func (l *lab) Close() {
	l.stopAll()
	if l.keep {
		fmt.Fprintf(l.progress, "kept %s\n", l.dir)
		return
	}
	if err := os.RemoveAll(l.dir); err != nil {
		fmt.Fprintf(l.progress, "remove %s: %v\n", l.dir, err)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}

// waitUntil polls cond every 20ms until it returns true, the process dies,
// or timeout passes.
func waitUntil(ctx context.Context, p *proc, timeout time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v\n%s", p.name, what, p.err, p.tail(15))
		}
		select {
		case <-ctx.Done():
			if p != nil {
				return fmt.Errorf("waiting for %s: %w\n%s", what, ctx.Err(), p.tail(15))
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// httpOK reports whether GET url answers 200 within a second.
func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body) // Only the status matters.
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// readProc reads a file under /proc/<pid>.
func readProc(pid int, file string) ([]byte, error) {
	return os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the CPU time (user + system) the process has used so far, from
// /proc/<pid>/stat. It counts all of the process's threads.
func cpuTime(pid int) (time.Duration, error) {
	b, err := readProc(pid, "stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	var utime, stime int64
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if _, err := fmt.Sscan(f[11], &utime); err != nil {
		return 0, fmt.Errorf("parse utime of %d: %w", pid, err)
	}
	if _, err := fmt.Sscan(f[12], &stime); err != nil {
		return 0, fmt.Errorf("parse stime of %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// memory returns VmRSS and VmHWM (peak RSS) of the process in bytes, from
// /proc/<pid>/status.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := readProc(pid, "status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		var kb int64
		if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(val), " kB"), &kb); err != nil {
			return 0, 0, fmt.Errorf("parse %s of %d: %w", key, pid, err)
		}
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}
