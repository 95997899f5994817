package deploy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
)

// jsonList is where ollamaq's indented JSON list starts in a line of its own.
var jsonList = regexp.MustCompile(`(?m)^\[\]?$`)

// composeProject is compose.yaml copied to a directory of its own and run
// with podman-compose in c's store.
type composeProject struct {
	c    *containers
	dir  string // the copy of deploy/compose
	name string // the project name
	env  []string
}

// compose runs podman-compose with args in the project and returns its
// stdout without podman-compose's own "exit code:" lines, and its stderr.
func (p *composeProject) compose(args ...string) (string, string, error) {
	cmd := exec.Command("podman-compose", append([]string{"-p", p.name}, args...)...)
	cmd.Dir, cmd.Env = p.dir, p.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var lines []string
	for l := range strings.SplitSeq(stdout.String(), "\n") {
		if !strings.HasPrefix(l, "exit code:") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n")), stderr.String(), err
}

// container is the name of the container of service.
func (p *composeProject) container(service string) string {
	p.c.t.Helper()
	name := p.c.must("ps", "--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "label=com.docker.compose.service="+service, "--format", "{{.Names}}")
	if name == "" || strings.Contains(name, "\n") {
		p.c.t.Fatalf("containers of %s: %q", service, name)
	}
	return name
}

// standIns builds, in c's store and under the names compose.yaml gives the
// official images, an image of nats-server from this module's dependency
// (entrypoint nats-server, as the official image's entrypoint runs it for a
// command of flags) and one of the Ollama simulator on port 11434.
func standIns(t *testing.T, c *containers, natsImage, ollamaImage string) {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin+"/", "github.com/nats-io/nats-server/v2", "../cmd/ollamasim")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server ollamasim: %v\n%s", err, out)
	}
	buildah := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("buildah", args...)
		cmd.Env = c.env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("buildah %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	for _, im := range []struct {
		name, binary, entrypoint string
	}{
		{natsImage, "nats-server", `["nats-server"]`},
		{ollamaImage, "ollamasim", `["ollamasim", "--listen", "0.0.0.0:11434"]`},
	} {
		w := buildah("from", "scratch")
		buildah("copy", w, filepath.Join(bin, im.binary), "/usr/local/bin/"+im.binary)
		buildah("config", "--env", "PATH=/usr/local/bin", "--entrypoint", im.entrypoint, "--cmd", "[]", w)
		buildah("commit", "--quiet", "--rm", w, im.name)
	}
}

// TestComposePodman runs compose.yaml itself with podman-compose, the
// official images replaced by stand-ins built here under their names
// (nats-server from this module's dependency, the Ollama simulator), and
// without Prometheus and Grafana, whose images cannot be had here: setup.sh
// with the image (ENGINE=podman), then docs/deploy.md's walk-through
// against the published ports: an admin key from the ollamaq service,
// both workers in its nodes, a pull through dispatcher-1 that reaches both,
// and a streamed chat through each dispatcher. Every health check command
// of compose.yaml passes in its container. podman-compose 1.0.3 neither
// waits for depends_on conditions (the services' restart policy covers
// NATS not being ready yet) nor keeps the exec form of a health check (it
// runs it with /bin/sh, which the image has not): the health checks run
// here with podman exec, as docker compose runs them.
func TestComposePodman(t *testing.T) {
	needTools(t, "buildah", "podman", "podman-compose")
	c := newContainers(t)
	image := c.makeImage()
	if err := c.chooseRuntime(image); err != nil {
		t.Skipf("podman cannot run containers here (%v): TestCompose runs the same processes without", err)
	}
	spec := readCompose(t, "compose/compose.yaml")
	standIns(t, c, spec.Services["nats-1"].Image, spec.Services["ollama-1"].Image)

	// The project: deploy/compose and deploy/grafana as compose.yaml
	// finds them, without a secrets/ made by hand, on free host ports.
	root := t.TempDir()
	for _, d := range []string{"compose", "grafana"} {
		if err := os.CopyFS(filepath.Join(root, d), os.DirFS(d)); err != nil {
			t.Fatal(err)
		}
	}
	p := &composeProject{c: c, dir: filepath.Join(root, "compose"), name: "omx" + strconv.FormatInt(time.Now().UnixNano(), 36),
		env: append(slices.Clone(c.env), "OLLAMAMAX_IMAGE="+image)}
	if err := os.RemoveAll(filepath.Join(p.dir, "secrets")); err != nil {
		t.Fatal(err)
	}
	yml, err := os.ReadFile(filepath.Join(p.dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hostPorts := map[string]string{} // in compose.yaml → here
	yml = regexp.MustCompile(`"127\.0\.0\.1:(\d+):`).ReplaceAllFunc(yml, func(m []byte) []byte {
		port := string(m[len(`"127.0.0.1:`) : len(m)-1])
		if hostPorts[port] == "" {
			hostPorts[port] = natstest.FreePort(t)
		}
		return []byte(`"127.0.0.1:` + hostPorts[port] + ":")
	})
	if err := os.WriteFile(filepath.Join(p.dir, "compose.yaml"), yml, 0o600); err != nil {
		t.Fatal(err)
	}

	setup := exec.Command("./setup.sh")
	setup.Dir, setup.Env = p.dir, append(slices.Clone(p.env), "ENGINE=podman")
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("setup.sh with the image: %v\n%s", err, out)
	}

	var services []string
	for name, s := range spec.Services {
		if len(s.Profiles) == 0 && name != "prometheus" && name != "grafana" {
			services = append(services, name)
		}
	}
	slices.Sort(services)
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range services {
				out, _ := c.podman("logs", "--tail", "20", p.container(s))
				t.Logf("%s:\n%s", s, out)
			}
		}
		if _, stderr, err := p.compose("down", "--volumes"); err != nil {
			t.Logf("podman-compose down: %v\n%s", err, stderr)
		}
		network := p.name + "_default"
		if out, err := c.podman("network", "rm", "--force", network); err != nil { // podman-compose 1.0.3 leaves it.
			t.Logf("podman network rm: %v: %s", err, out)
		}
		// CNI's host-local addresses of the network, which outlive it.
		_ = os.RemoveAll(filepath.Join("/var/lib/cni/networks", network))
	})
	if _, stderr, err := p.compose(append([]string{"up", "--detach"}, services...)...); err != nil {
		t.Fatalf("podman-compose up: %v\n%s", err, stderr)
	}

	dispatchers := map[string]string{ // service: its API here
		"dispatcher-1": "http://127.0.0.1:" + hostPorts["11435"],
		"dispatcher-2": "http://127.0.0.1:" + hostPorts["11436"],
	}
	for name, base := range dispatchers {
		waitUntil(t, 90*time.Second, name+" is ready on its published port", func() bool {
			_, code := keyed(t, "", http.MethodGet, base+"/readyz", "")
			return code == http.StatusOK
		})
	}
	out, stderr, err := p.compose("run", "--rm", "-T", "--no-deps", "ollamaq", "keys", "create", "me", "--tenant", "me", "--role", "admin")
	key := out[strings.LastIndex(out, "\n")+1:]
	if err != nil || !strings.HasPrefix(key, "omx_") {
		t.Fatalf("ollamaq keys create: %v\n%s\n%s", err, out, stderr)
	}
	nodesWith := func(model string) string {
		out, stderr, err := p.compose("run", "--rm", "-T", "--no-deps", "ollamaq", "nodes", "--json")
		var nodes []struct {
			ID, State string
			Models    []struct{ Name string }
		}
		// podman-compose prints the podman version and the services it
		// leaves out before the command's output.
		start := jsonList.FindStringIndex(out)
		if err != nil || start == nil || json.NewDecoder(strings.NewReader(out[start[0]:])).Decode(&nodes) != nil {
			t.Fatalf("ollamaq nodes --json: %v\n%s\n%s", err, out, stderr)
		}
		var ids []string
		for _, n := range nodes {
			if n.State == "ready" && slices.ContainsFunc(n.Models, func(m struct{ Name string }) bool { return m.Name == model }) {
				ids = append(ids, n.ID)
			}
		}
		slices.Sort(ids)
		return fmt.Sprint(ids)
	}
	waitUntil(t, 60*time.Second, "ollamaq nodes lists both workers ready", func() bool { return nodesWith("llama3.2:latest") == "[gpu-1 gpu-2]" })
	body, code := keyed(t, key, http.MethodPost, dispatchers["dispatcher-1"]+"/api/pull", `{"model":"qwen3:0.6b"}`)
	if lines := strings.Split(strings.TrimSpace(body), "\n"); code != http.StatusOK || lines[len(lines)-1] != `{"status":"success"}` {
		t.Errorf("pull through dispatcher-1: %d\n%s", code, body)
	}
	waitUntil(t, 30*time.Second, "both workers have the model pulled", func() bool { return nodesWith("qwen3:0.6b") == "[gpu-1 gpu-2]" })
	for name, base := range dispatchers {
		frames, text := streamChat(t, base, key)
		if frames < 3 || text == "" {
			t.Errorf("%s: chat streamed %d frames: %q", name, frames, text)
		}
	}
	for _, name := range services {
		hc := spec.Services[name].Healthcheck
		if hc == nil || len(hc.Test) < 2 || hc.Test[0] != "CMD" || !strings.HasPrefix(spec.Services[name].Image, "${OLLAMAMAX_IMAGE") {
			continue // The stand-ins do not have the official images' tools.
		}
		if out, err := c.output(append([]string{"exec", p.container(name)}, hc.Test[1:]...)...); err != nil {
			t.Errorf("%s: health check %v: %v: %s", name, hc.Test[1:], err, out)
		}
	}
}
