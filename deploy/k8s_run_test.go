package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/auth"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// chartConf renders what the NATS chart (2.14.2, files/config/*.yaml)
// makes of the values for one server of the StatefulSet, as a nats-server
// configuration: server_name, the client and monitoring ports, jetstream
// with its store_dir and the values' jetstream merge, the resolver with its
// dir and the values' resolver merge, and the values' top-level merge (where
// auth-values.jq puts the operator, the system account and the preloaded
// accounts). It is a model of the chart's templates for the keys the values
// set, not the chart: the cluster block is left out (its peers do not
// exist here) and the ports are free ones on loopback.
func chartConf(t *testing.T, values map[string]any, dir string, port, httpPort string) string {
	t.Helper()
	cfg := get(values, "config")
	conf := map[string]any{
		"server_name": "nats-0",
		"host":        "127.0.0.1",
		"port":        rawConf(port),
		"http":        "127.0.0.1:" + httpPort,
	}
	if get(cfg, "jetstream")["enabled"] == true {
		js := map[string]any{"store_dir": filepath.Join(dir, "jetstream")}
		maps.Copy(js, get(get(cfg, "jetstream"), "merge"))
		conf["jetstream"] = js
	}
	if get(cfg, "resolver")["enabled"] == true {
		r := map[string]any{"dir": filepath.Join(dir, "resolver")}
		maps.Copy(r, get(get(cfg, "resolver"), "merge"))
		conf["resolver"] = r
	}
	maps.Copy(conf, get(cfg, "merge"))
	var b strings.Builder
	writeConf(&b, conf)
	return b.String()
}

func get(m map[string]any, k string) map[string]any {
	v, _ := m[k].(map[string]any)
	return v
}

// rawConf is a value the chart writes unquoted: "<< 8MB >>" in the values.
type rawConf string

var unquoted = regexp.MustCompile(`^<<\s*(.*?)\s*>>$`)

// writeConf writes v as the chart does: JSON, which nats-server's parser
// reads, with "<< x >>" strings unquoted.
func writeConf(b *strings.Builder, v any) {
	switch v := v.(type) {
	case map[string]any:
		b.WriteString("{\n")
		for _, k := range slices.Sorted(maps.Keys(v)) {
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteString(": ")
			writeConf(b, v[k])
			b.WriteString("\n")
		}
		b.WriteString("}")
	case rawConf:
		b.WriteString(string(v))
	case string:
		if m := unquoted.FindStringSubmatch(v); m != nil {
			b.WriteString(m[1])
			return
		}
		sb, _ := json.Marshal(v)
		b.Write(sb)
	default:
		vb, _ := json.Marshal(v)
		b.Write(vb)
	}
}

// merge merges src into dst as Helm merges values files: maps key by key,
// anything else replaced.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// logBuffer collects a process's output, up to 1 MiB, for failure messages.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 1<<20 - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// process is one container's binary, run here.
type process struct {
	name  string
	cmd   *exec.Cmd
	log   *logBuffer
	done  chan struct{}
	ports map[string]string // container port name -> the loopback port it listens on here
}

// stop sends SIGTERM, as the kubelet does, and waits for the process to exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("%s: SIGTERM: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within 30s of SIGTERM\n%s", p.name, p.log)
	}
}

// runContainer starts the container's binary here as the kubelet would
// start it in pod podName: its args and env with $(VAR) expanded from the
// env before, the downward API's metadata.name, and the mounts at the
// directories of mounts. override replaces the values of some variables
// (the NATS URL, Ollama's address); every listen address moves to a free
// loopback port, recorded by container port name.
func runContainer(t *testing.T, bin string, c *corev1.Container, podName string, mounts map[string]string, override map[string]string) *process {
	t.Helper()
	p := &process{name: podName + "/" + c.Name, log: &logBuffer{}, done: make(chan struct{}), ports: map[string]string{}}
	byPort := map[string]string{}
	for _, cp := range c.Ports {
		byPort[strconv.Itoa(int(cp.ContainerPort))] = cp.Name
	}
	vars := map[string]string{}
	expand := func(s string) string {
		s = envRef.ReplaceAllStringFunc(s, func(ref string) string {
			if v, ok := vars[envRef.FindStringSubmatch(ref)[1]]; ok {
				return v
			}
			return ref // Kubernetes leaves an unknown reference as it is.
		})
		for _, mp := range slices.Sorted(maps.Keys(mounts)) {
			s = strings.ReplaceAll(s, mp, mounts[mp])
		}
		return s
	}
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			v = podName
		case e.ValueFrom != nil:
			t.Fatalf("%s: env %s from %v: not modelled here", p.name, e.Name, e.ValueFrom)
		}
		v = expand(v)
		if o, ok := override[e.Name]; ok {
			v = o
		}
		if _, port, ok := strings.Cut(v, ":"); ok && slices.Contains(listenVars[filepath.Base(bin)], e.Name) {
			name, known := byPort[port]
			if !known {
				t.Fatalf("%s: %s=%s listens on no container port", p.name, e.Name, v)
			}
			p.ports[name] = natstest.FreePort(t)
			v = "127.0.0.1:" + p.ports[name]
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, expand(a))
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitFor polls check until it returns nil, for up to timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probe runs the container's HTTP probes against the process until each
// answers 200.
func probe(t *testing.T, p *process, c *corev1.Container) {
	t.Helper()
	for kind, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		u := fmt.Sprintf("http://127.0.0.1:%s%s", p.ports[pr.HTTPGet.Port.StrVal], pr.HTTPGet.Path)
		waitFor(t, fmt.Sprintf("%s %s probe %s", p.name, kind, u), 60*time.Second, func() error {
			select {
			case <-p.done:
				t.Fatalf("%s exited:\n%s", p.name, p.log)
			default:
			}
			resp, err := http.Get(u)
			if err != nil {
				return err
			}
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			return nil
		})
	}
}

// jsz is what KEDA's nats-jetstream scaler decodes from /jsz (its
// jetStreamEndpointResponse, the fields it reads).
type jsz struct {
	Accounts []struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Streams []struct {
			Name  string `json:"name"`
			State struct {
				LastSequence int64 `json:"last_seq"`
			} `json:"state"`
			Consumers []struct {
				Name          string `json:"name"`
				NumAckPending int    `json:"num_ack_pending"`
				NumPending    int    `json:"num_pending"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// scalerLag asks the monitoring endpoint what KEDA's scaler (2.20) asks
// it, with the trigger's metadata and accountID, finds the account as the
// scaler does (its id is accountID, or its name is account), and returns
// the lag as the scaler computes it: the consumer's num_pending +
// num_ack_pending. A consumer that does not exist is an error for the
// scaler (found false here). name is what /jsz calls the account.
func scalerLag(monitor, accountID string, md map[string]string) (lag int64, found bool, name string, err error) {
	u := fmt.Sprintf("http://%s/jsz?%s", monitor, url.Values{"acc": {accountID}, "consumers": {"true"}, "config": {"true"}}.Encode())
	resp, err := http.Get(u)
	if err != nil {
		return 0, false, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var z jsz
	if err := json.NewDecoder(resp.Body).Decode(&z); err != nil {
		return 0, false, "", fmt.Errorf("decode %s: %w", u, err)
	}
	for _, a := range z.Accounts {
		if a.ID != accountID && a.Name != md["account"] {
			continue
		}
		for _, s := range a.Streams {
			if s.Name != md["stream"] {
				continue
			}
			for _, c := range s.Consumers {
				if c.Name == md["consumer"] {
					return int64(c.NumPending + c.NumAckPending), true, a.Name, nil
				}
			}
			return 0, false, a.Name, nil
		}
	}
	return 0, false, "", fmt.Errorf("%s: no stream %s in account %s", u, md["stream"], accountID)
}

// TestKubernetesFleet runs what the manifests describe, without Kubernetes:
// a NATS server from the chart's values with auth-values.jq's output (as
// the chart would render it for one server), then the dispatcher and the
// worker binaries with exactly their containers' args and env (addresses
// moved to loopback, the NATS URL to that server, Ollama to the simulator,
// one stream replica instead of three), the credentials where the Secret
// volumes mount them, named by the pod. Their probes must answer 200. Then
// it plays KEDA: the monitoring endpoint is asked what the scaler asks it,
// with each trigger's metadata and the account of the TriggerAuthentication;
// idle, the formula's sum is 0 (no pods); the worker stops (scaled to zero)
// and a streamed request waits in the queue, which shows as lag 1 (one pod);
// a worker starts again (scaled from zero) and the request gets its answer.
func TestKubernetesFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries and runs a fleet")
	}
	jq, err := exec.LookPath("jq")
	if err != nil {
		t.Skip("jq is not installed: the documented set-up pipes ollamaq auth export through k8s/nats/auth-values.jq")
	}
	o := render(t, "k8s/base")
	var dispatcherC, workerC *corev1.Container
	var dispatcherPod, workerPod pod
	for _, p := range o.pods() {
		for _, c := range p.containers() {
			switch ourBinary(c) {
			case "dispatcher":
				dispatcherC, dispatcherPod = c, p
			case "worker":
				workerC, workerPod = c, p
			}
		}
	}
	if dispatcherC == nil || workerC == nil || len(o.scaled) != 1 {
		t.Fatalf("want one dispatcher, one worker and one ScaledObject in k8s/base")
	}
	so := o.scaled[0]
	models, slots := modelsOf(t, o, so.Spec.ScaleTargetRef.Name)
	bins := map[string]string{}
	for _, b := range []string{"dispatcher", "worker", "ollamaq"} {
		bins[b] = build(t, b)
	}

	// The auth directory and the Secrets' files, as docs/deploy.md makes them.
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	secretDirs := map[string]string{}
	secretFile := func(secret, name string) string {
		if secretDirs[secret] == "" {
			secretDirs[secret] = t.TempDir()
		}
		return filepath.Join(secretDirs[secret], name)
	}
	mounts := func(p pod, c *corev1.Container) map[string]string {
		m := map[string]string{}
		for _, vm := range c.VolumeMounts {
			for _, v := range p.spec.Volumes {
				if v.Name == vm.Name && v.Secret != nil {
					m[vm.MountPath] = secretFile(v.Secret.SecretName, "")
				}
			}
		}
		return m
	}
	dispatcherName := dispatcherPod.owner[len("StatefulSet "):] + "-0"
	workerName := workerPod.owner[len("StatefulSet "):] + "-0"
	adminCreds := filepath.Join(t.TempDir(), "root.creds")
	for _, u := range []struct {
		name, file string
		role       auth.Role
	}{
		{dispatcherName, secretFile(dispatcherPod.spec.Volumes[0].Secret.SecretName, dispatcherName+".creds"), auth.Dispatcher},
		{workerName, secretFile(workerPod.spec.Volumes[0].Secret.SecretName, workerName+".creds"), auth.Worker},
		{"root", adminCreds, auth.Admin},
	} {
		if _, _, err := dir.AddUser(u.name, auth.UserOptions{Role: u.role, CredsFile: u.file}); err != nil {
			t.Fatal(err)
		}
	}
	export, err := exec.Command(bins["ollamaq"], "auth", "export", "--dir", dir.Path(), "--json").Output()
	if err != nil {
		t.Fatalf("ollamaq auth export --json: %v", err)
	}
	jqCmd := exec.Command(jq, "-f", "k8s/nats/auth-values.jq")
	jqCmd.Stdin = bytes.NewReader(export)
	authValues, err := jqCmd.Output()
	if err != nil {
		t.Fatalf("jq -f k8s/nats/auth-values.jq: %v", err)
	}
	var exported struct {
		Accounts []struct {
			Name      string `json:"name"`
			PublicKey string `json:"public_key"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(export, &exported); err != nil {
		t.Fatal(err)
	}
	var account string // the accountID that the ollamamax-nats-account Secret holds
	for _, a := range exported.Accounts {
		if a.Name == "OLLAMAMAX" {
			account = a.PublicKey
		}
	}

	// NATS as the chart would run it with both values files.
	values := map[string]any{}
	for _, f := range [][]byte{mustRead(t, "k8s/nats/values.yaml"), authValues} {
		var v map[string]any
		if err := yaml.Unmarshal(f, &v); err != nil {
			t.Fatal(err)
		}
		merge(values, v)
	}
	natsPortHere, monitorPortHere := natstest.FreePort(t), natstest.FreePort(t)
	opts := parse(t, "nats.conf", chartConf(t, values, t.TempDir(), natsPortHere, monitorPortHere))
	trust, err := auth.LoadTrust(dir.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"trusted operators", len(opts.TrustedOperators), 1},
		{"system account", opts.SystemAccount, trust.SystemAccount},
		{"plain users", len(opts.Users) + len(opts.Nkeys), 0},
		{"resolver", opts.AccountResolver != nil, true},
		{"JetStream", opts.JetStream, true},
		{"max payload", opts.MaxPayload, int32(8 << 20)},
	} {
		if c.got != c.want {
			t.Errorf("nats.conf from the values: %s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if t.Failed() {
		return
	}
	srv := run(t, "nats.conf", opts)
	monitor := "127.0.0.1:" + monitorPortHere

	sim := ollamasim.DefaultConfig()
	sim.Models = nil
	for _, m := range models {
		sim.Models = append(sim.Models, ollamasim.Model{Name: m})
	}
	sim.Parallel, _ = strconv.Atoi(slots)
	sim.TokensPerSecond, sim.DefaultTokens = 500, 8
	ollama := httptest.NewServer(ollamasim.New(sim))
	t.Cleanup(ollama.Close)
	ollamaHost := strings.TrimPrefix(ollama.URL, "http://")

	override := map[string]string{
		"NATS_URL":           srv.ClientURL(),
		"OLLAMAMAX_REPLICAS": "1", // one server here; the manifests' three need the cluster
		"OLLAMA_HOST":        ollamaHost,
	}
	d := runContainer(t, bins["dispatcher"], dispatcherC, dispatcherName, mounts(dispatcherPod, dispatcherC), override)
	probe(t, d, dispatcherC)
	startWorker := func() *process {
		w := runContainer(t, bins["worker"], workerC, workerName, mounts(workerPod, workerC), override)
		probe(t, w, workerC)
		return w
	}
	w := startWorker()

	// What KEDA sees: every trigger's consumer once the worker bound them, idle.
	sum := func(t *testing.T) int64 {
		t.Helper()
		var total int64
		for _, tr := range so.Spec.Triggers {
			lag, found, _, err := scalerLag(monitor, account, tr.Metadata)
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				t.Fatalf("trigger %s: no consumer %s", tr.Name, tr.Metadata["consumer"])
			}
			total += lag
		}
		return total
	}
	waitFor(t, "the worker's consumers, seen by the scaler's query", 30*time.Second, func() error {
		for _, tr := range so.Spec.Triggers {
			_, found, name, err := scalerLag(monitor, account, tr.Metadata)
			if err != nil || !found {
				return fmt.Errorf("consumer %s: found %v, %v", tr.Metadata["consumer"], found, err)
			}
			// Why accountID: the account parameter is matched against this name.
			if name == account {
				t.Errorf("/jsz names the account by its key %s: the account parameter would do", name)
			}
		}
		return nil
	})
	target, err := strconv.ParseFloat(so.Spec.Advanced.ScalingModifiers.Target, 64)
	if err != nil {
		t.Fatal(err)
	}
	replicas := func(sum int64) int { return int(math.Ceil(float64(sum) / target)) }
	if got := sum(t); got != 0 {
		t.Errorf("idle: the formula's sum is %d, want 0 (scale to zero)", got)
	}
	t.Logf("idle: every trigger's consumer found, sum 0: %d replicas", replicas(0))

	// Scaled to zero: the worker drains and exits, a request waits.
	w.stop(t)
	key, err := exec.Command(bins["ollamaq"], "--server", srv.ClientURL(), "--creds", adminCreds, "keys", "create", "k8s", "--tenant", "k8s").Output()
	if err != nil {
		t.Fatalf("ollamaq keys create: %v", err)
	}
	// At zero the listings show no models (they list what live workers
	// report), though requests for them are queued.
	waitFor(t, "/api/tags empty once the worker left", 30*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+d.ports["http"]+"/api/tags", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		var tags struct {
			Models []json.RawMessage `json:"models"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %v", resp.Status, err)
		}
		if len(tags.Models) != 0 {
			return fmt.Errorf("%d models listed", len(tags.Models))
		}
		return nil
	})
	type answer struct {
		status int
		lines  []map[string]any
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		body := fmt.Sprintf(`{"model": %q, "prompt": "why is the sky blue?"}`, models[0])
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+d.ports["http"]+"/api/generate", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		a := answer{status: resp.StatusCode}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				a.err = fmt.Errorf("line %q: %w", sc.Text(), err)
				break
			}
			a.lines = append(a.lines, line)
		}
		answered <- a
	}()
	waitFor(t, "the queued request, seen by the scaler's query", 30*time.Second, func() error {
		if got := sum(t); got != 1 {
			return fmt.Errorf("sum %d, want 1", got)
		}
		return nil
	})
	if act, err := strconv.ParseFloat(so.Spec.Advanced.ScalingModifiers.ActivationTarget, 64); err != nil || !(1 > act) {
		t.Errorf("a queued job (sum 1) does not pass activationTarget %q (%v): KEDA would not wake the pods", so.Spec.Advanced.ScalingModifiers.ActivationTarget, err)
	}
	if got := replicas(1); got != 1 {
		t.Errorf("one queued job: %d replicas, want 1", got)
	}
	t.Logf("worker stopped, one request waiting: sum 1, active, %d replica", replicas(1))
	select {
	case a := <-answered:
		t.Fatalf("the request was answered with no worker up: %+v", a)
	default:
	}

	// Scaled from zero: the pod's worker comes back and answers.
	startWorker()
	select {
	case a := <-answered:
		if a.err != nil || a.status != http.StatusOK || len(a.lines) == 0 || a.lines[len(a.lines)-1]["done"] != true {
			t.Fatalf("the answer after scaling from zero: status %d, %d lines, err %v, last %v\ndispatcher:\n%s", a.status, len(a.lines), a.err, a.lines, d.log)
		}
		if len(a.lines) < 2 {
			t.Errorf("the answer came in %d line, want a stream", len(a.lines))
		}
		t.Logf("worker started again: the waiting request streamed %d lines, the last done", len(a.lines))
	case <-time.After(60 * time.Second):
		t.Fatalf("no answer within 60s of the worker's start\ndispatcher:\n%s", d.log)
	}
	waitFor(t, "the lag back to 0", 30*time.Second, func() error {
		if got := sum(t); got != 0 {
			return fmt.Errorf("sum %d", got)
		}
		return nil
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
