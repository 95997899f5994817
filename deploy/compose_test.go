package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// composeFile is the part of the compose specification compose.yaml uses;
// decoding it with KnownFields catches a misspelt key.
type composeFile struct {
	Name     string
	Services map[string]composeService
	Volumes  map[string]*struct{}
	Ext      map[string]any `yaml:",inline"` // x-* extension fields
}

type composeService struct {
	Image       string
	Command     []string
	Entrypoint  []string
	Environment map[string]string
	Volumes     []string
	Ports       []string
	DependsOn   yaml.Node `yaml:"depends_on"` // a list, or a map of conditions
	Healthcheck *struct {
		Test        []string
		Interval    string
		Timeout     string
		Retries     int
		StartPeriod string `yaml:"start_period"`
		Disable     bool
	}
	Restart  string
	Profiles []string
	Deploy   any
}

// dependsOn is the services s depends on.
func (s composeService) dependsOn(t *testing.T) []string {
	t.Helper()
	var list []string
	if s.DependsOn.Kind == 0 || s.DependsOn.Decode(&list) == nil {
		return list
	}
	var conds map[string]struct {
		Condition string
	}
	if err := s.DependsOn.Decode(&conds); err != nil {
		t.Fatalf("depends_on: %v", err)
	}
	for name, c := range conds {
		if !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, c.Condition) {
			t.Errorf("depends_on %s: condition %q", name, c.Condition)
		}
		list = append(list, name)
	}
	return list
}

func readCompose(t *testing.T, file string) composeFile {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for k := range c.Ext {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: unknown top-level key %q", file, k)
		}
	}
	return c
}

// The roles of the services, by image.
const (
	ollamamaxImage = "${OLLAMAMAX_IMAGE:-localhost/ollamamax:latest}"
	natsImage      = "docker.io/library/nats:"
	ollamaImage    = "docker.io/ollama/ollama:"
)

// binary is the command of an ollamamax service and its arguments: the
// image has no entrypoint, and runs the dispatcher by default.
func (s composeService) binary() (string, []string) {
	args := append(slices.Clone(s.Entrypoint), s.Command...)
	if len(args) == 0 {
		return "dispatcher", nil
	}
	return args[0], args[1:]
}

// binaries builds dispatcher, worker and ollamaq into a directory.
func binaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/dispatcher", "../cmd/worker", "../cmd/ollamaq").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// anyHelpFlag is a flag in --help: "  -name" (the flag package's) or "  --name" (ollamaq's).
var anyHelpFlag = regexp.MustCompile(`(?m)^  --?([a-z0-9-]+)`)

// helpOf runs bin with args and --help and returns the flags its text
// lists (-name or --name at the start of a line) and the text.
func helpOf(t *testing.T, bin string, args ...string) (map[string]bool, string) {
	t.Helper()
	var out bytes.Buffer
	c := exec.Command(bin, append(args, "--help")...)
	c.Stdout, c.Stderr = &out, &out
	_ = c.Run() // --help may exit 0 or 2; the text is what counts.
	flags := map[string]bool{}
	for _, m := range anyHelpFlag.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	return flags, out.String()
}

// mount is one bind mount or named volume of a service.
type mount struct {
	source, target string
	bind           bool // source is a path on the host, relative to compose.yaml
}

func parseMounts(t *testing.T, svc string, vols []string) []mount {
	t.Helper()
	var ms []mount
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro") {
			t.Errorf("%s: volume %q is not SOURCE:TARGET[:ro]", svc, v)
			continue
		}
		ms = append(ms, mount{source: parts[0], target: parts[1], bind: strings.HasPrefix(parts[0], ".")})
	}
	return ms
}

// hostPort is the host and port of an address or URL.
func hostPort(t *testing.T, s string) (string, int) {
	t.Helper()
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("%q is not host:port: %v", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%q: port %v", s, err)
	}
	return host, p
}

// composeListenVars are the variables that set the addresses an ollamamax
// service listens on.
var composeListenVars = []string{"OLLAMAMAX_LISTEN", "OLLAMAMAX_METRICS_LISTEN", "OLLAMAMAX_WORKER_LISTEN", "OLLAMAMAX_NATS_LISTEN"}

// TestCompose checks compose/compose.yaml against the binaries and the
// files beside it: every service of the image runs a binary it has with
// flags and variables the binary knows, and checks its health with its own
// healthcheck subcommand; every bind mount exists in the repository or
// among what setup.sh makes; every variable naming a file in the container
// names a mounted one; ports published, dialled (NATS_URL, OLLAMA_HOST),
// scraped (prometheus.yml), and routed (nats.conf) are ones the services
// listen on. Then it runs setup.sh with the ollamaq binary, parses nats.conf
// with the auth block it made using nats-server's parser, starts the three
// nodes from it on loopback, and runs the dispatchers, workers and ollamaq
// of compose.yaml as processes with their environment (service names and
// mounted paths mapped to this machine, simulators for the Ollamas):
// compose.yaml's walk-through, an admin key from ollamaq then a streamed
// chat through each dispatcher, works; every health check passes; the
// scrape targets serve the metrics. The official nats, ollama, prometheus
// and grafana images are not pulled here.
func TestCompose(t *testing.T) {
	c := readCompose(t, "compose/compose.yaml")
	bin := binaries(t)

	secrets := filepath.Join(t.TempDir(), "secrets")
	setup := exec.Command("compose/setup.sh")
	setup.Env = append(os.Environ(), "OLLAMAQ="+filepath.Join(bin, "ollamaq"), "SECRETS="+secrets, "OLLAMAMAX_AUTH_DIR=")
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("setup.sh: %v\n%s", err, out)
	}
	// hostPath is where a bind mount's source is here.
	hostPath := func(source string) string {
		if rest, ok := strings.CutPrefix(source, "./secrets/"); ok {
			return filepath.Join(secrets, rest)
		}
		return filepath.Join("compose", source)
	}

	roles := map[string][]string{} // "nats", "ollama", "ollamamax", "other": service names
	for name, s := range c.Services {
		switch {
		case s.Image == ollamamaxImage:
			roles["ollamamax"] = append(roles["ollamamax"], name)
		case strings.HasPrefix(s.Image, natsImage):
			roles["nats"] = append(roles["nats"], name)
		case strings.HasPrefix(s.Image, ollamaImage):
			roles["ollama"] = append(roles["ollama"], name)
		default:
			roles["other"] = append(roles["other"], name)
		}
	}
	for _, r := range roles {
		slices.Sort(r)
	}
	if got := fmt.Sprint(roles["nats"], roles["ollama"]); got != "[nats-1 nats-2 nats-3] [ollama-1 ollama-2]" {
		t.Fatalf("nats and ollama services: %s", got)
	}

	// Ports each service listens on in its container.
	listens := map[string]map[int]bool{}
	for _, name := range roles["nats"] {
		listens[name] = map[int]bool{4222: true, 6222: true, 8222: true} // nats.conf, checked below
	}
	for _, name := range roles["ollama"] {
		listens[name] = map[int]bool{11434: true}
	}
	listens["prometheus"], listens["grafana"] = map[int]bool{9090: true}, map[int]bool{3000: true}
	for _, name := range roles["ollamamax"] {
		listens[name] = map[int]bool{}
		for _, v := range composeListenVars {
			if addr, ok := c.Services[name].Environment[v]; ok {
				_, p := hostPort(t, addr)
				listens[name][p] = true
			}
		}
	}
	// dialled checks that addr (host:port or a URL) is a port service listens on.
	dialled := func(where, addr string) {
		t.Helper()
		host, port := hostPort(t, addr)
		if _, ok := c.Services[host]; !ok {
			t.Errorf("%s: %s dials %s, which is no service", where, addr, host)
		} else if !listens[host][port] {
			t.Errorf("%s: %s dials port %d, on which %s does not listen", where, addr, port, host)
		}
	}

	helps := map[string]struct {
		flags map[string]bool
		text  string
	}{}
	published := map[string]string{}
	for name, s := range c.Services {
		mounts := parseMounts(t, name, s.Volumes)
		for _, m := range mounts {
			if !m.bind {
				if _, ok := c.Volumes[m.source]; !ok {
					t.Errorf("%s: volume %s is not declared under volumes", name, m.source)
				}
				continue
			}
			if _, err := os.Stat(hostPath(m.source)); err != nil {
				t.Errorf("%s: mounts %s, which neither the repository nor setup.sh has: %v", name, m.source, err)
			}
		}
		for _, dep := range s.dependsOn(t) {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is no service", name, dep)
			}
		}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q is not 127.0.0.1:HOST:CONTAINER", name, p)
				continue
			}
			if other, ok := published[parts[1]]; ok {
				t.Errorf("%s and %s both publish host port %s", name, other, parts[1])
			}
			published[parts[1]] = name
			if cp, _ := strconv.Atoi(parts[2]); !listens[name][cp] {
				t.Errorf("%s publishes port %s, on which it does not listen", name, parts[2])
			}
		}
		if s.Image != ollamamaxImage {
			continue
		}

		cmd, args := s.binary()
		if !slices.Contains([]string{"dispatcher", "worker", "ollamaq"}, cmd) {
			t.Errorf("%s runs %s, which the image does not have", name, cmd)
			continue
		}
		h, ok := helps[cmd]
		if !ok {
			h.flags, h.text = helpOf(t, filepath.Join(bin, cmd))
			helps[cmd] = h
		}
		for _, a := range args {
			if f, ok := strings.CutPrefix(a, "-"); ok {
				if f, _, _ = strings.Cut(strings.TrimPrefix(f, "-"), "="); !h.flags[f] {
					t.Errorf("%s: %s has no flag %s", name, cmd, a)
				}
			}
		}
		for v, val := range s.Environment {
			if !strings.Contains(h.text, v) {
				t.Errorf("%s: %s=%s: %s --help does not mention it", name, v, val, cmd)
			}
			if strings.HasPrefix(val, "/") && !slices.ContainsFunc(mounts, func(m mount) bool { return m.target == val }) {
				t.Errorf("%s: %s=%s, which is not mounted", name, v, val)
			}
		}
		for _, u := range strings.Split(s.Environment["NATS_URL"], ",") {
			if u != "" {
				dialled(name+" NATS_URL", u)
			}
		}
		if u, ok := s.Environment["OLLAMA_HOST"]; ok {
			dialled(name+" OLLAMA_HOST", u)
		}
		switch {
		case cmd == "ollamaq":
			if s.Healthcheck == nil || !s.Healthcheck.Disable {
				t.Errorf("%s: the image's health check is the dispatcher's; a one-shot ollamaq needs it disabled", name)
			}
		case s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" ||
			s.Healthcheck.Test[1] != cmd || s.Healthcheck.Test[2] != "healthcheck":
			t.Errorf("%s: health check %v, want [CMD %s healthcheck]", name, s.Healthcheck, cmd)
		default:
			hflags, _ := helpOf(t, filepath.Join(bin, cmd), "healthcheck")
			for _, a := range s.Healthcheck.Test[3:] {
				if f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); !hflags[f] {
					t.Errorf("%s: health check: %s healthcheck has no flag %s", name, cmd, a)
				}
			}
		}
	}

	prom := readPrometheus(t, "compose/prometheus.yml")
	for _, target := range prom {
		dialled("prometheus.yml", target)
	}
	checkGrafana(t, c, dialled)
	if t.Failed() {
		return
	}

	nodes := startComposeNATS(t, c, secrets)
	for i, n := range roles["nats"] {
		for _, r := range nodes[i].routes {
			dialled(n+" route", r)
		}
	}
	runCompose(t, c, bin, nodes, hostPath, roles["ollamamax"], prom)
}

// checkGrafana checks that the grafana service mounts the provisioning
// files where Grafana reads them and the dashboard where its provider
// looks, and that the data source is the prometheus service.
func checkGrafana(t *testing.T, c composeFile, dialled func(where, addr string)) {
	t.Helper()
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, UID, Access, URL string
			IsDefault                    bool `yaml:"isDefault"`
		}
	}
	readYAML(t, "compose/grafana/datasources/prometheus.yaml", &ds)
	if len(ds.Datasources) != 1 || !ds.Datasources[0].IsDefault || ds.Datasources[0].Type != "prometheus" {
		t.Errorf("grafana data sources: %+v, want one, the default, of Prometheus", ds.Datasources)
	} else {
		dialled("grafana data source", ds.Datasources[0].URL)
	}
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type     string
			AllowUIUpdates bool `yaml:"allowUiUpdates"`
			Options        struct{ Path string }
		}
	}
	readYAML(t, "compose/grafana/dashboards/ollamamax.yaml", &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("grafana dashboard providers: %+v, want one of files", dp.Providers)
	}
	want := map[string]string{ // mount target: source
		"/etc/grafana/provisioning/datasources":                   "./grafana/datasources",
		"/etc/grafana/provisioning/dashboards":                    "./grafana/dashboards",
		path.Join(dp.Providers[0].Options.Path, "ollamamax.json"): "../grafana/ollamamax.json",
	}
	got := map[string]string{}
	for _, m := range parseMounts(t, "grafana", c.Services["grafana"].Volumes) {
		got[m.target] = m.source
	}
	for target, source := range want {
		if got[target] != source {
			t.Errorf("grafana mounts %q at %s, want %s", got[target], target, source)
		}
	}
}

// readYAML decodes file into v strictly.
func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// readPrometheus returns the scrape targets of file, keyed "job target".
func readPrometheus(t *testing.T, file string) map[string]string {
	t.Helper()
	var p struct {
		Global        map[string]string
		ScrapeConfigs []struct {
			JobName       string                       `yaml:"job_name"`
			StaticConfigs []struct{ Targets []string } `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, file, &p)
	targets := map[string]string{}
	for _, sc := range p.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[sc.JobName+" "+tg] = tg
			}
		}
	}
	if len(targets) == 0 {
		t.Fatalf("%s: no scrape targets", file)
	}
	return targets
}

// composeNode is one NATS node of compose.yaml, started here.
type composeNode struct {
	name   string
	url    string   // its client URL on loopback
	routes []string // nats.conf's routes, as written
}

// startComposeNATS parses nats.conf, with the auth block setup.sh made as
// its auth.conf and /data in a temporary directory, once per node with its
// NATS_SERVER_NAME, checks what compose.yaml relies on, and starts the
// three nodes as a cluster on loopback.
func startComposeNATS(t *testing.T, c composeFile, secrets string) []composeNode {
	t.Helper()
	conf, err := os.ReadFile("compose/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := os.ReadFile(filepath.Join(secrets, "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"nats-1", "nats-2", "nats-3"}
	clusterPorts := make([]int, len(names))
	for i := range names {
		clusterPorts[i], _ = strconv.Atoi(natstest.FreePort(t)) // FreePort returns digits.
	}
	var nodes []composeNode
	var opts []*server.Options
	for i, name := range names {
		if got := c.Services[name].Environment["NATS_SERVER_NAME"]; got != name {
			t.Fatalf("%s: NATS_SERVER_NAME %q", name, got)
		}
		dir := t.TempDir()
		data := filepath.Join(dir, "data") + "/"
		for file, src := range map[string][]byte{"nats.conf": conf, "auth.conf": auth} {
			if err := os.WriteFile(filepath.Join(dir, file), bytes.ReplaceAll(src, []byte("/data/"), []byte(data)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("NATS_SERVER_NAME", name)
		o, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
		if err != nil {
			t.Fatalf("nats-server cannot parse nats.conf for %s: %v", name, err)
		}
		if o.AccountResolver != nil {
			t.Cleanup(o.AccountResolver.Close)
		}
		var routes []string
		for _, r := range o.Routes {
			routes = append(routes, r.String())
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"server name", o.ServerName, name},
			{"client port", o.Port, 4222},
			{"monitoring port", o.HTTPPort, 8222},
			{"cluster port", o.Cluster.Port, 6222},
			{"trusted operators", len(o.TrustedOperators), 1},
			{"plain users", len(o.Users) + len(o.Nkeys), 0},
			{"resolver", o.AccountResolver != nil, true},
			{"JetStream", o.JetStream, true},
			{"JetStream store in the volume", o.StoreDir, filepath.Join(dir, "data", "jetstream")},
			{"routes", len(routes), 3},
		}
		for _, ch := range checks {
			if fmt.Sprint(ch.got) != fmt.Sprint(ch.want) {
				t.Errorf("nats.conf for %s: %s: %v, want %v", name, ch.what, ch.got, ch.want)
			}
		}
		// Here, on loopback: each node its own ports, the routes to them.
		o.Host, o.Port, o.HTTPPort, o.Cluster.Host, o.Cluster.Port = "127.0.0.1", -1, 0, "127.0.0.1", clusterPorts[i]
		o.Routes = nil
		for _, p := range clusterPorts {
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
		}
		o.NoSigs, o.NoLog = true, true
		opts = append(opts, o)
		nodes = append(nodes, composeNode{name: name, routes: routes})
	}
	if t.Failed() {
		t.FailNow()
	}
	var servers []*server.Server
	for i, o := range opts {
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("start %s: %v", names[i], err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		servers = append(servers, s)
	}
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready within 10s", names[i])
		}
		nodes[i].url = s.ClientURL()
	}
	waitUntil(t, 30*time.Second, "the three nodes elect a JetStream meta leader", func() bool {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
	return nodes
}

// runCompose runs the ollamamax services of c as processes with their
// environment, mapped to this machine: service names to the loopback
// addresses of what stands for them, mount targets to their sources, each
// listener on a free loopback port. It creates an admin key with the
// ollamaq service, streams a chat through each dispatcher with it, runs
// every health check, and scrapes prom's targets.
func runCompose(t *testing.T, c composeFile, bin string, nodes []composeNode, hostPath func(string) string, services []string, prom map[string]string) {
	t.Helper()
	addrs := map[string]string{} // "service:port" in compose.yaml → address here
	for _, n := range nodes {
		u, err := url.Parse(n.url)
		if err != nil {
			t.Fatal(err)
		}
		addrs[n.name+":4222"] = u.Host
	}
	for _, name := range []string{"ollama-1", "ollama-2"} {
		sim := httptest.NewServer(ollamasim.New(ollamasim.DefaultConfig()))
		t.Cleanup(sim.Close)
		addrs[name+":11434"] = strings.TrimPrefix(sim.URL, "http://")
	}
	for _, name := range services {
		for _, v := range composeListenVars {
			if addr, ok := c.Services[name].Environment[v]; ok {
				_, p := hostPort(t, addr)
				addrs[fmt.Sprintf("%s:%d", name, p)] = natstest.FreeAddr(t)
			}
		}
	}
	// env is a service's environment, mapped.
	env := func(name string) []string {
		s := c.Services[name]
		mounts := map[string]string{}
		for _, m := range parseMounts(t, name, s.Volumes) {
			mounts[m.target] = hostPath(m.source)
		}
		out := append(os.Environ(), "OLLAMAMAX_LOG_FORMAT=json", "OLLAMAMAX_AUTH_DIR=", "HOME="+t.TempDir(),
			"NATS_CONTEXT=", "XDG_CONFIG_HOME="+t.TempDir())
		for k, v := range s.Environment {
			if p, ok := mounts[v]; ok {
				v = p
			}
			for from, to := range addrs {
				v = strings.ReplaceAll(v, from, to)
			}
			if slices.Contains(composeListenVars, k) {
				_, p := hostPort(t, v)
				v = addrs[fmt.Sprintf("%s:%d", name, p)]
			}
			out = append(out, k+"="+v)
		}
		return out
	}
	command := func(name string, extra ...string) *exec.Cmd {
		cmd, args := c.Services[name].binary()
		x := exec.Command(filepath.Join(bin, cmd), append(args, extra...)...)
		x.Env = env(name)
		return x
	}
	var running []string
	gone := map[string]chan struct{}{} // closed when the service's process has exited
	for _, name := range services {
		if len(c.Services[name].Profiles) > 0 {
			continue // Run on demand, as the ollamaq tool below.
		}
		cmd := command(name)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }() // How it ended shows in its output.
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				t.Logf("%s's output:\n%s", name, logs.String())
			}
		})
		running = append(running, name)
		gone[name] = exited
	}
	healthy := func(name string) error {
		s := c.Services[name]
		x := command(name)
		x.Path = filepath.Join(bin, s.Healthcheck.Test[1])
		x.Args = append([]string{x.Path}, s.Healthcheck.Test[2:]...)
		out, err := x.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	for _, name := range running {
		waitUntil(t, 60*time.Second, name+"'s health check passes", func() bool {
			select {
			case <-gone[name]:
				t.Fatalf("%s exited", name)
			default:
			}
			return healthy(name) == nil
		})
	}

	keyCmd := command("ollamaq")
	keyCmd.Args = []string{keyCmd.Path, "keys", "create", "me", "--tenant", "me", "--role", "admin"}
	var stderr bytes.Buffer
	keyCmd.Stderr = &stderr
	out, err := keyCmd.Output()
	if err != nil {
		t.Fatalf("ollamaq keys create: %v\n%s", err, stderr.String())
	}
	key := strings.TrimSpace(string(out))

	// docs/deploy.md's pull: through a dispatcher, on every worker.
	disp := func(name string) string {
		_, p := hostPort(t, c.Services[name].Environment["OLLAMAMAX_LISTEN"])
		return "http://" + addrs[fmt.Sprintf("%s:%d", name, p)]
	}
	// The workers with a model, by `ollamaq nodes --json` (the ollamaq
	// service's command).
	nodesWith := func(model string) []string {
		x := command("ollamaq", "--json")
		out, err := x.Output()
		if err != nil {
			t.Fatalf("ollamaq nodes --json: %v", err)
		}
		var nodes []struct {
			ID, State string
			Models    []struct{ Name string }
		}
		if err := json.Unmarshal(out, &nodes); err != nil {
			t.Fatalf("ollamaq nodes --json: %v\n%s", err, out)
		}
		var ids []string
		for _, n := range nodes {
			if n.State == "ready" && slices.ContainsFunc(n.Models, func(m struct{ Name string }) bool { return m.Name == model }) {
				ids = append(ids, n.ID)
			}
		}
		slices.Sort(ids)
		return ids
	}
	waitUntil(t, 30*time.Second, "ollamaq nodes lists both workers ready", func() bool {
		return fmt.Sprint(nodesWith("llama3.2:latest")) == "[gpu-1 gpu-2]"
	})
	body, code := keyed(t, key, http.MethodPost, disp("dispatcher-1")+"/api/pull", `{"model":"qwen3:0.6b"}`)
	if lines := strings.Split(strings.TrimSpace(body), "\n"); code != http.StatusOK || lines[len(lines)-1] != `{"status":"success"}` {
		t.Errorf("pull through dispatcher-1: %d\n%s", code, body)
	}
	waitUntil(t, 30*time.Second, "both workers have the model pulled through dispatcher-1", func() bool {
		return fmt.Sprint(nodesWith("qwen3:0.6b")) == "[gpu-1 gpu-2]"
	})

	for _, name := range running {
		s := c.Services[name]
		if cmd, _ := s.binary(); cmd != "dispatcher" {
			continue
		}
		base := disp(name)
		waitUntil(t, 30*time.Second, name+" lists the workers' models, the pulled one too", func() bool {
			body, code := keyed(t, key, http.MethodGet, base+"/api/tags", "")
			return code == http.StatusOK && strings.Contains(body, `"llama3.2:latest"`) && strings.Contains(body, `"qwen3:0.6b"`)
		})
		if _, code := keyed(t, "", http.MethodPost, base+"/api/chat", chatRequest); code != http.StatusUnauthorized {
			t.Errorf("%s: a chat without a key: %d, want 401", name, code)
		}
		body, code := keyed(t, key, http.MethodPost, base+"/api/chat", chatRequest)
		frames := strings.Count(strings.TrimSpace(body), "\n") + 1
		if code != http.StatusOK || frames < 3 || !strings.Contains(body, `"done":true`) {
			t.Errorf("%s: chat with the key: %d, %d frames:\n%s", name, code, frames, body)
		}
	}
	for job, target := range prom {
		host, p := hostPort(t, target)
		addr := addrs[fmt.Sprintf("%s:%d", host, p)]
		body, code := keyed(t, "", http.MethodGet, "http://"+addr+"/metrics", "")
		if code != http.StatusOK || !strings.Contains(body, "ollamamax_") {
			t.Errorf("prometheus.yml %s: /metrics %d without ollamamax metrics", job, code)
		}
	}
}

// keyed sends a request with the API key, if any, and returns the body and status.
func keyed(t *testing.T, key, method, u, body string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		return err.Error(), 0
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body) // What was read is what the test compares.
	return string(b), resp.StatusCode
}
