package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// imageUser is the image's user, numeric: the image has no /etc/passwd.
const imageUser = "65532:65532"

// imageFiles is everything in the image: the three binaries, the CA bundle,
// /tmp and the user's directory; no shell, no libc.
var imageFiles = map[string]string{ // path: "owner mode"
	"etc":                               "0:0 drwxr-xr-x",
	"etc/ssl":                           "0:0 drwxr-xr-x",
	"etc/ssl/certs":                     "0:0 drwxr-xr-x",
	"etc/ssl/certs/ca-certificates.crt": "0:0 -rw-r--r--",
	"tmp":                               "0:0 dtrwxrwxrwx",
	"usr":                               "0:0 drwxr-xr-x",
	"usr/local":                         "0:0 drwxr-xr-x",
	"usr/local/bin":                     "0:0 drwxr-xr-x",
	"usr/local/bin/dispatcher":          "0:0 -rwxr-xr-x",
	"usr/local/bin/ollamaq":             "0:0 -rwxr-xr-x",
	"usr/local/bin/worker":              "0:0 -rwxr-xr-x",
	"var":                               "0:0 drwxr-xr-x",
	"var/lib":                           "0:0 drwxr-xr-x",
	"var/lib/ollamamax":                 imageUser + " drwxr-xr-x",
}

// containers is a private store of buildah and podman in a temporary
// directory (vfs: no mounts to clean up), with a configuration of its own
// (CONTAINERS_CONF, also for podman-compose), so that the test neither sees
// nor touches the machine's images, containers and networks.
type containers struct {
	t       *testing.T
	dir     string
	env     []string // the test's environment with CONTAINERS_STORAGE_CONF and CONTAINERS_CONF
	runtime string   // the OCI runtime chosen; "" for podman's default
	// runFlags go to every podman run of the image test: host networking
	// (the test's servers are on loopback).
	runFlags []string
}

func newContainers(t *testing.T) *containers {
	t.Helper()
	dir, err := os.MkdirTemp("", "omx-image-") // Short: podman's socket paths have a limit.
	if err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(dir, "storage.conf")
	if err := os.WriteFile(storage, fmt.Appendf(nil, "[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "run")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &containers{t: t, dir: dir, runFlags: []string{"--network", "host"},
		env: append(os.Environ(), "CONTAINERS_STORAGE_CONF="+storage, "CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"))}
	c.writeConf()
	t.Cleanup(func() {
		if out, err := c.podman("rm", "--all", "--force"); err != nil {
			t.Logf("podman rm --all: %v\n%s", err, out)
		}
		// conmon runs podman's clean-up of an ended container after it,
		// on this store: removed before that ends, the store comes back.
		deadline := time.Now().Add(10 * time.Second)
		for usersOf(dir) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove the container store: %v", err)
		}
	})
	return c
}

// writeConf writes the containers.conf of c: what a machine like CI's
// needs (no systemd; root without CAP_SYS_RESOURCE, which podman's default
// limits for root, 1048576 open files and 4194304 processes, need), the
// network definitions in c's directory, and c's runtime.
func (c *containers) writeConf() {
	c.t.Helper()
	conf := fmt.Sprintf("[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n"+
		"[network]\nnetwork_config_dir = %q\n"+
		"[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n", filepath.Join(c.dir, "networks"))
	if c.runtime != "" {
		conf += fmt.Sprintf("runtime = %q\n", c.runtime)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "containers.conf"), []byte(conf), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// needTools skips the test unless every tool is installed and the test
// runs as root; in CI, where .ci/run installs them, a missing tool fails it.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, which .ci/run installs", tool)
			}
			t.Skipf("%s is not installed (Debian: apt-get install %s): this runs only where it is", tool, strings.Join(tools, " "))
		}
	}
	if os.Getuid() != 0 {
		t.Skip("podman runs as root here (CI does): rootless podman needs subuids set up for the image's user")
	}
}

// makeImage builds the image with `make image` into c's store and returns
// its name.
func (c *containers) makeImage() string {
	c.t.Helper()
	image := fmt.Sprintf("localhost/ollamamax-test:%d", time.Now().UnixNano())
	build := exec.Command("make", "-C", "..", "image", "IMAGE="+image, "IMAGE_BIN="+c.t.TempDir())
	build.Env = c.env
	if out, err := build.CombinedOutput(); err != nil {
		c.t.Fatalf("make image: %v\n%s", err, out)
	}
	return image
}

// usersOf counts the processes whose command line names dir.
func usersOf(dir string) int {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline") // The pattern is valid.
	n := 0
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(dir)) {
			n++
		}
	}
	return n
}

// podman runs podman with args and returns its combined output.
func (c *containers) podman(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// output runs podman with args and returns its stdout, or its stderr
// with the error.
func (c *containers) output(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return strings.TrimSpace(stderr.String()), err
	}
	return strings.TrimSpace(string(out)), nil
}

// must runs podman with args and fails the test if it fails.
func (c *containers) must(args ...string) string {
	c.t.Helper()
	out, err := c.podman(args...)
	if err != nil {
		c.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// chooseRuntime finds an OCI runtime that can run image here: podman's
// default, else runc or crun. crun 1.8 refuses hybrid cgroups (a v2
// hierarchy holding controllers beside v1), as on this project's machines;
// runc runs there. It returns why none could.
func (c *containers) chooseRuntime(image string) error {
	var why []string
	for _, rt := range []string{"", "runc", "crun"} {
		if rt != "" {
			if _, err := exec.LookPath(rt); err != nil {
				continue
			}
		}
		c.runtime = rt
		c.writeConf()
		out, err := c.podman(append(append([]string{"run", "--rm"}, c.runFlags...), image, "ollamaq", "--help")...)
		if err == nil {
			return nil
		}
		name := rt
		if name == "" {
			name = "podman's default runtime"
		}
		why = append(why, fmt.Sprintf("%s: %v: %s", name, err, lastLine(out)))
	}
	return errors.New(strings.Join(why, "; "))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// stateDir is the image's one writable directory, its user's: the
// embedded server's store, ollamaq's auth directory. The test keeps it in a
// volume that every container mounts, as docs/deploy.md does.
const stateDir = "/var/lib/ollamamax"

// imageProc is a dispatcher or worker from the image, and how to check it.
type imageProc struct {
	name string
	// healthcheck runs the container's health check (or, without
	// containers, the same command from the image's files) and returns
	// its output and whether it passed.
	healthcheck func() (string, bool)
	// exec runs args beside it, as podman exec does, with env added to
	// its environment, and returns the command's stdout.
	exec func(env []string, args ...string) (string, error)
	// uids is the real, effective, saved and file-system user IDs of its
	// main process.
	uids func() []string
}

// imageRunner runs the image's commands: as containers, or where podman
// cannot run any, from the image's files on this machine as the image's
// user. Both share stateDir between every command. env is added to the
// image's environment, args replace its command.
type imageRunner interface {
	// run runs args to completion, as podman run --rm does, and returns
	// its stdout.
	run(t *testing.T, env []string, args ...string) string
	// start starts a long-running command; healthCmd, if not nil,
	// replaces the image's health check.
	start(t *testing.T, name string, env []string, healthCmd []string, args ...string) imageProc
}

type podmanRunner struct {
	c      *containers
	image  string
	volume string // mounted at stateDir
}

func (r podmanRunner) flags(env []string, readOnly bool) []string {
	v := r.volume + ":" + stateDir
	if readOnly {
		v += ":ro"
	}
	f := append(slices.Clone(r.c.runFlags), "--volume", v)
	for _, e := range env {
		f = append(f, "--env", e)
	}
	return f
}

func (r podmanRunner) run(t *testing.T, env []string, args ...string) string {
	t.Helper()
	args = append(append(append([]string{"run", "--rm"}, r.flags(env, false)...), r.image), args...)
	out, err := r.c.output(args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (r podmanRunner) start(t *testing.T, name string, env []string, healthCmd []string, args ...string) imageProc {
	t.Helper()
	run := append([]string{"run", "--detach", "--name", name}, r.flags(env, len(args) > 0 && args[0] == "worker")...)
	if healthCmd != nil {
		// Podman 4.3's --health-cmd, like docker's, takes a shell
		// command only, which the image cannot run: the worker's
		// health check is given where an exec form can be (compose's
		// healthcheck.test, Kubernetes probes), and run here as they do.
		run = append(run, "--no-healthcheck")
	}
	r.c.must(append(append(run, r.image), args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := r.c.podman("logs", name)
			t.Logf("podman logs %s:\n%s", name, out)
		}
	})
	exec := func(env []string, args ...string) (string, error) {
		x := []string{"exec"}
		for _, e := range env {
			x = append(x, "--env", e)
		}
		return r.c.output(append(append(x, name), args...)...)
	}
	return imageProc{
		name: name,
		healthcheck: func() (string, bool) {
			if healthCmd != nil {
				out, err := exec(nil, healthCmd...)
				return out, err == nil
			}
			out, err := r.c.podman("healthcheck", "run", name)
			return out, err == nil
		},
		exec: exec,
		uids: func() []string {
			pid := r.c.must("inspect", "--format", "{{.State.Pid}}", name)
			return procUIDs(t, pid)
		},
	}
}

// rootfsRunner runs the binaries of the image's files directly, with the
// image's environment and user: the fallback where podman cannot run
// containers. stateDir is a directory in /tmp, which that user can reach.
type rootfsRunner struct {
	rootfs string
	env    []string // the image's
	uid    uint32
	health []string // the image's health check command
	state  string   // stands for stateDir
}

// command is args as the image would run them, with env: paths under
// stateDir are under r.state.
func (r rootfsRunner) command(env []string, args ...string) *exec.Cmd {
	if len(args) == 0 {
		args = []string{"dispatcher"}
	}
	cmd := exec.Command(filepath.Join(r.rootfs, "usr/local/bin", args[0]), args[1:]...)
	for _, e := range append(slices.Clone(r.env), env...) {
		cmd.Env = append(cmd.Env, strings.ReplaceAll(e, stateDir, r.state))
	}
	cmd.Dir = r.state
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: r.uid, Gid: r.uid}}
	return cmd
}

func (r rootfsRunner) run(t *testing.T, env []string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := r.command(env, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func (r rootfsRunner) start(t *testing.T, name string, env []string, healthCmd []string, args ...string) imageProc {
	t.Helper()
	if healthCmd == nil {
		healthCmd = r.health
	}
	cmd := r.command(env, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // Its state is in a temporary directory.
		<-exited
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, logs.String())
		}
	})
	exec := func(extra []string, args ...string) (string, error) {
		c := r.command(append(slices.Clone(env), extra...), args...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			return stderr.String(), err
		}
		return strings.TrimSpace(string(out)), nil
	}
	return imageProc{
		name: name,
		healthcheck: func() (string, bool) {
			out, err := exec(nil, healthCmd...)
			return out, err == nil
		},
		exec: exec,
		uids: func() []string { return procUIDs(t, strconv.Itoa(cmd.Process.Pid)) },
	}
}

// procUIDs reads the Uid line of /proc/PID/status.
func procUIDs(t *testing.T, pid string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no Uid line in /proc/%s/status", pid)
	return nil
}

// imageConfig is what the test reads of podman image inspect.
type imageConfig struct {
	Size   int64
	Config struct {
		User       string
		Env        []string
		Cmd        []string
		Entrypoint []string
		WorkingDir string
	}
	Healthcheck *struct { // Podman puts it beside Config.
		Test []string
	}
}

// TestImage builds the image with `make image` (static binaries, then
// buildah builds Containerfile's final stage FROM scratch from them), checks
// what is in it (the three binaries, statically linked, the CA bundle, no
// shell) and that it runs as a numeric non-root user, then follows
// docs/deploy.md's walk-through with podman: ollamaq makes the auth
// directory and credentials in a volume, a dispatcher with the embedded
// NATS in operator mode and API keys, a worker on its credentials in front
// of a simulated Ollama on this machine, an API key from ollamaq in the
// dispatcher's container, and a chat answer streamed through them. The
// health checks pass while they serve, and the worker's fails when its
// Ollama is gone. It logs the image's size and holds README.md's figure to
// it.
//
// Without buildah or podman it skips (in CI, where .ci/run installs them,
// it fails). Where podman cannot run containers
// (OLLAMAMAX_IMAGE_NO_CONTAINERS=1 pretends so), it runs the image's
// binaries from its files on this machine, as the image's user, instead.
func TestImage(t *testing.T) {
	needTools(t, "buildah", "podman")
	c := newContainers(t)
	image := c.makeImage()

	var inspected []imageConfig
	if err := json.Unmarshal([]byte(c.must("image", "inspect", image)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(inspected))
	}
	cfg := inspected[0]
	t.Logf("image size: %d bytes (%.1f MB)", cfg.Size, float64(cfg.Size)/1e6)
	checkREADMESize(t, cfg.Size)
	var health []string
	if cfg.Healthcheck != nil {
		health = cfg.Healthcheck.Test
	}
	configChecks := []struct {
		name      string
		got, want any
	}{
		{"user", cfg.Config.User, imageUser},
		{"command", cfg.Config.Cmd, []string{"dispatcher"}},
		{"entrypoint", len(cfg.Config.Entrypoint), 0},
		{"health check", health, []string{"CMD", "dispatcher", "healthcheck"}},
		{"working directory", cfg.Config.WorkingDir, "/var/lib/ollamamax"},
	}
	for _, ch := range configChecks {
		if fmt.Sprint(ch.got) != fmt.Sprint(ch.want) {
			t.Errorf("%s: %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	rootfs := c.must("image", "mount", image)
	t.Cleanup(func() { _, _ = c.podman("image", "unmount", image) }) // Removed with the store anyway.
	checkImageFiles(t, rootfs)
	if t.Failed() {
		return
	}

	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	var run imageRunner = podmanRunner{c: c, image: image, volume: "omx-state-" + suffix}
	if os.Getenv("OLLAMAMAX_IMAGE_NO_CONTAINERS") != "" {
		t.Log("OLLAMAMAX_IMAGE_NO_CONTAINERS is set: running the image's binaries from its files")
		run = newRootfsRunner(t, rootfs, cfg)
	} else if err := c.chooseRuntime(image); err != nil {
		t.Logf("podman cannot run a container here (%v): running the image's binaries from its files instead", err)
		run = newRootfsRunner(t, rootfs, cfg)
	}

	// docs/deploy.md, "Container image", with loopback addresses for the
	// container names (host networking) and a simulator for Ollama.
	simCfg := ollamasim.DefaultConfig()
	simCfg.DefaultTokens = 12
	sim := httptest.NewServer(ollamasim.New(simCfg))
	t.Cleanup(sim.Close)
	api, natsAddr, metrics := natstest.FreeAddr(t), natstest.FreeAddr(t), natstest.FreeAddr(t)
	authDir := stateDir + "/.config/ollamamax/auth" // ollamaq's default, under the image's HOME
	run.run(t, nil, "ollamaq", "auth", "init")
	run.run(t, nil, "ollamaq", "auth", "add", "gpu-1", "--role", "worker")
	run.run(t, nil, "ollamaq", "auth", "add", "admin", "--role", "admin")
	disp := run.start(t, "omx-dispatcher-"+suffix, []string{"OLLAMAMAX_AUTH_DIR=" + authDir, "OLLAMAMAX_KEYS=true",
		"OLLAMAMAX_LISTEN=" + api, "OLLAMAMAX_NATS_LISTEN=" + natsAddr}, nil)
	// A worker exits if NATS does not answer when it starts.
	waitUntil(t, 60*time.Second, "the dispatcher's health check passes", func() bool {
		_, ok := disp.healthcheck()
		return ok
	})
	wrk := run.start(t, "omx-worker-"+suffix, []string{"NATS_URL=nats://" + natsAddr, "NATS_CREDS=" + authDir + "/creds/gpu-1.creds",
		"OLLAMA_HOST=" + sim.URL, "OLLAMAMAX_WORKER_LISTEN=" + metrics},
		[]string{"worker", "healthcheck"}, "worker")
	key, err := disp.exec([]string{"NATS_URL=nats://" + natsAddr, "NATS_CREDS=" + authDir + "/creds/admin.creds"},
		"ollamaq", "keys", "create", "me", "--tenant", "me")
	if err != nil {
		t.Fatalf("ollamaq keys create: %v\n%s", err, key)
	}

	base := "http://" + api
	waitUntil(t, 60*time.Second, "the dispatcher lists the worker's model", func() bool {
		body, code := keyed(t, key, http.MethodGet, base+"/api/tags", "")
		var tags struct{ Models []struct{ Name string } }
		return code == http.StatusOK && json.Unmarshal([]byte(body), &tags) == nil &&
			len(tags.Models) == 1 && tags.Models[0].Name == "llama3.2:latest"
	})

	frames, text := streamChat(t, base, key)
	_, want := streamChat(t, sim.URL, "")
	if frames < 3 || text != want {
		t.Errorf("through the image: %d frames, %q; want several frames, and the simulator's own %q for %s", frames, text, want, chatRequest)
	}
	t.Logf("streamed %d frames through the dispatcher and worker of the image: %q", frames, text)

	for _, p := range []imageProc{disp, wrk} {
		if out, ok := p.healthcheck(); !ok {
			t.Errorf("%s: health check failed: %s", p.name, out)
		}
		if uids := p.uids(); fmt.Sprint(uids) != "[65532 65532 65532 65532]" {
			t.Errorf("%s runs as user IDs %v, want 65532 for all", p.name, uids)
		}
	}
	sim.Close()
	waitUntil(t, 30*time.Second, "the worker's health check fails once its Ollama is gone", func() bool {
		_, ok := wrk.healthcheck()
		return !ok
	})
}

// newRootfsRunner runs the binaries in rootfs with the environment of cfg.
func newRootfsRunner(t *testing.T, rootfs string, cfg imageConfig) rootfsRunner {
	t.Helper()
	uid, err := strconv.ParseUint(strings.Split(cfg.Config.User, ":")[0], 10, 32)
	if err != nil {
		t.Fatalf("image user %q: %v", cfg.Config.User, err)
	}
	r := rootfsRunner{rootfs: rootfs, uid: uint32(uid), health: []string{"dispatcher", "healthcheck"}}
	if r.state, err = os.MkdirTemp("", "omx-state-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(r.state) })
	if err := os.Chown(r.state, int(uid), int(uid)); err != nil { // As the image's stateDir is.
		t.Fatal(err)
	}
	for _, e := range cfg.Config.Env {
		if !strings.HasPrefix(e, "PATH=") {
			r.env = append(r.env, e)
		}
	}
	if cfg.Healthcheck != nil && len(cfg.Healthcheck.Test) > 1 {
		r.health = cfg.Healthcheck.Test[1:] // After "CMD".
	}
	// The store's mount of the image is root's; its user must reach the binaries.
	for dir := rootfs; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if info, err := os.Stat(dir); err == nil && info.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(dir, info.Mode().Perm()|0o001); err != nil {
				t.Fatal(err)
			}
		}
	}
	return r
}

const chatRequest = `{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}]}`

// streamChat asks base's /api/chat for chatRequest, streamed, and returns
// how many frames the answer came in and their text.
func streamChat(t *testing.T, base, key string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", strings.NewReader(chatRequest))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%s/api/chat: %s, Content-Type %q", base, resp.Status, resp.Header.Get("Content-Type"))
	}
	var text strings.Builder
	frames, done := 0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var f struct {
			Message struct{ Content string }
			Done    bool
			Error   string
		}
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil || f.Error != "" {
			t.Fatalf("%s/api/chat: frame %q: %v", base, sc.Text(), err)
		}
		frames++
		text.WriteString(f.Message.Content)
		done = f.Done
	}
	if err := sc.Err(); err != nil || !done {
		t.Fatalf("%s/api/chat: the stream ended without done (%v)", base, err)
	}
	return frames, text.String()
}

// checkImageFiles holds the files of rootfs to imageFiles, and checks that
// the binaries are statically linked (no program interpreter).
func checkImageFiles(t *testing.T, rootfs string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(rootfs, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == rootfs {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(rootfs, path) // Under rootfs by construction.
		st := info.Sys().(*syscall.Stat_t)
		got[rel] = fmt.Sprintf("%d:%d %v", st.Uid, st.Gid, info.Mode())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range imageFiles {
		if got[path] != want {
			t.Errorf("/%s: %q, want %q", path, got[path], want)
		}
	}
	for path := range got {
		if _, ok := imageFiles[path]; !ok {
			t.Errorf("/%s is in the image, which should hold only %d files", path, len(imageFiles))
		}
	}
	for _, name := range []string{"dispatcher", "worker", "ollamaq"} {
		f, err := elf.Open(filepath.Join(rootfs, "usr/local/bin", name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
			t.Errorf("%s is dynamically linked: it would need a libc the image has not", name)
		}
		_ = f.Close()
	}
}

// readmeSize is how README.md states the image's size.
var readmeSize = regexp.MustCompile(`The image is (\d+) MB`)

// checkREADMESize fails when README.md's figure is more than 15% off size.
func checkREADMESize(t *testing.T, size int64) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := readmeSize.FindSubmatch(b)
	if m == nil {
		t.Errorf("README.md does not say %q", readmeSize)
		return
	}
	said, _ := strconv.ParseFloat(string(m[1]), 64) // \d+ parses.
	if got := float64(size) / 1e6; math.Abs(got-said) > 0.15*said {
		t.Errorf("README.md says the image is %s MB; it is %.1f MB: update the figure", m[1], got)
	}
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond) // Polling, with the deadline above.
	}
}
