// Package deploy_test checks that the files in deploy/ match the binaries
// and that nats-server accepts the cluster and leaf node configurations.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/natscluster"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// unit is what the test reads from a systemd unit.
type unit struct {
	execStart []string // the words of ExecStart, continuation lines joined
	env       []string // the names set with Environment=
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var u unit
	var cont *string
	var exec string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cont != nil {
			*cont += " " + strings.TrimSuffix(line, `\`)
			if !strings.HasSuffix(line, `\`) {
				cont = nil
			}
			continue
		}
		switch {
		case strings.HasPrefix(line, "ExecStart="):
			exec = strings.TrimSuffix(strings.TrimPrefix(line, "ExecStart="), `\`)
			if strings.HasSuffix(line, `\`) {
				cont = &exec
			}
		case strings.HasPrefix(line, "Environment="):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "Environment="), "=")
			u.env = append(u.env, name)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	u.execStart = strings.Fields(exec)
	return u
}

var helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// build builds the command into the test's temporary directory and
// returns the binary's path.
func build(t *testing.T, cmd string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), cmd)
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/"+cmd).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", cmd, err, out)
	}
	return bin
}

// help builds the command and returns its flags and its --help text.
func help(t *testing.T, cmd string) (map[string]bool, string) {
	t.Helper()
	bin := build(t, cmd)
	var out bytes.Buffer
	c := exec.Command(bin, "--help")
	c.Stdout, c.Stderr = &out, &out
	_ = c.Run() // --help may exit 0 or 2; the text is what counts.
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("%s --help lists no flags:\n%s", cmd, out.String())
	}
	return flags, out.String()
}

// TestSystemdUnits checks that every flag in each unit's ExecStart is one
// of its binary's flags, and every variable it sets one the binary reads.
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("no units: %v", err)
	}
	type binary struct {
		flags map[string]bool
		text  string
	}
	bins := map[string]binary{}
	for _, path := range units {
		t.Run(filepath.Base(path), func(t *testing.T) {
			u := readUnit(t, path)
			if len(u.execStart) == 0 {
				t.Fatal("no ExecStart")
			}
			cmd := filepath.Base(u.execStart[0])
			b, ok := bins[cmd]
			if !ok {
				b.flags, b.text = help(t, cmd)
				bins[cmd] = b
			}
			for _, w := range u.execStart[1:] {
				if !strings.HasPrefix(w, "-") {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
				if !b.flags[name] {
					t.Errorf("ExecStart has %s, which %s does not know", w, cmd)
				}
			}
			for _, name := range u.env {
				if !strings.Contains(b.text, name) {
					t.Errorf("Environment=%s: %s --help does not mention it", name, cmd)
				}
			}
		})
	}
}

// deployment is what the tests fill the placeholders of the configurations
// in deploy/nats with: an auth directory with a worker and an admin, and a
// CA with a server certificate for localhost.
type deployment struct {
	dir         *auth.Dir
	trust       *auth.Trust
	workerCreds string // gpu7, role worker
	adminCreds  string // root, role admin
	tlsDir      string // server.pem, server-key.pem, ca.pem
	caFile      string
	state       string // stands for /var/lib/nats
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{dir: dir, tlsDir: t.TempDir(), state: t.TempDir()}
	for _, u := range []struct {
		name string
		role auth.Role
		file *string
	}{{"gpu7", auth.Worker, &d.workerCreds}, {"root", auth.Admin, &d.adminCreds}} {
		*u.file = filepath.Join(t.TempDir(), u.name+".creds")
		if _, _, err := dir.AddUser(u.name, auth.UserOptions{Role: u.role, CredsFile: *u.file}); err != nil {
			t.Fatal(err)
		}
	}
	if d.trust, err = auth.LoadTrust(dir.Path()); err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t, "nats")
	ca.Server(d.tlsDir)
	d.caFile = filepath.Join(d.tlsDir, "ca.pem")
	if err := os.Rename(ca.File, d.caFile); err != nil {
		t.Fatal(err)
	}
	return d
}

// clusterConf is nats/cluster.conf with the placeholders filled in, and with
// its commented tls block of the leaf nodes turned on if leafTLS.
func (d *deployment) clusterConf(t *testing.T, leafTLS bool) string {
	t.Helper()
	src, err := os.ReadFile("nats/cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	repl := []string{
		"OPERATOR_JWT", d.trust.OperatorJWT,
		"/etc/nats/tls/", d.tlsDir + "/",
		"/var/lib/nats/", d.state + "/",
	}
	for _, a := range d.trust.Accounts {
		switch a.Name {
		case "SYS":
			repl = append(repl, "SYSTEM_ACCOUNT_JWT", a.JWT, "SYSTEM_ACCOUNT", a.PublicKey)
		case "OLLAMAMAX":
			repl = append(repl, "OLLAMAMAX_ACCOUNT_JWT", a.JWT, "OLLAMAMAX_ACCOUNT", a.PublicKey)
		}
	}
	conf := strings.NewReplacer(repl...).Replace(string(src))
	for _, p := range []string{"OPERATOR_JWT", "SYSTEM_ACCOUNT", "OLLAMAMAX_ACCOUNT"} {
		if strings.Contains(conf, p) {
			t.Fatalf("placeholder %s left after filling in", p)
		}
	}
	if leafTLS {
		conf = uncommentBlock(t, conf, "leafnodes {", "tls {")
	}
	return conf
}

// uncommentBlock turns on the commented block that opens with "# "+open
// after the line after: one level of "# " comes off each of its lines, so
// that comments inside it stay comments.
func uncommentBlock(t *testing.T, conf, after, open string) string {
	t.Helper()
	lines := strings.Split(conf, "\n")
	seen, depth := false, 0
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		switch {
		case !seen && trimmed == after:
			seen = true
		case seen && depth == 0 && trimmed == "# "+open:
			depth = 1
			lines[i] = strings.Replace(l, "# ", "", 1)
		case depth > 0:
			if !strings.HasPrefix(trimmed, "#") {
				t.Fatalf("line %q of the commented %s block is not commented", l, open)
			}
			lines[i] = strings.Replace(l, "# ", "", 1)
			if strings.TrimSpace(lines[i]) == "}" {
				return strings.Join(lines, "\n")
			}
		}
	}
	t.Fatalf("no commented %q block after %q", open, after)
	return ""
}

// parse writes conf to a file and parses it with nats-server's parser.
func parse(t *testing.T, name, conf string) *server.Options {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server cannot parse %s: %v", name, err)
	}
	if opts.AccountResolver != nil {
		t.Cleanup(opts.AccountResolver.Close)
	}
	return opts
}

// run starts a server with opts and stops it when the test ends.
func run(t *testing.T, name string, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("start a server from %s: %v", name, err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server from %s not ready within 10s", name)
	}
	return s
}

// alone makes the options of cluster.conf run on loopback without the
// cluster (its peers do not exist here, and JetStream would wait for them),
// with its leaf node port at leafPort.
func alone(opts *server.Options, leafPort int) {
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.LeafNode.Host, opts.LeafNode.Port = "127.0.0.1", leafPort
}

// TestClusterConf fills in the placeholders of nats/cluster.conf with an
// auth directory and certificates made here, parses it with nats-server's
// own parser, and starts a server from it (on loopback, without its peers):
// a worker's credentials with the CA get in, a client without the CA does not.
func TestClusterConf(t *testing.T) {
	d := newDeployment(t)
	opts := parse(t, "cluster.conf", d.clusterConf(t, false))
	checks := []struct {
		name      string
		got, want any
	}{
		{"trusted operators", len(opts.TrustedOperators), 1},
		{"system account", opts.SystemAccount, d.trust.SystemAccount},
		{"plain users", len(opts.Users) + len(opts.Nkeys), 0},
		{"resolver", opts.AccountResolver != nil, true},
		{"client TLS", opts.TLSConfig != nil, true},
		{"route TLS", opts.Cluster.TLSConfig != nil, true},
		{"route TLS verifies", opts.Cluster.TLSConfig != nil && opts.Cluster.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert, true},
		{"JetStream", opts.JetStream, true},
		// The domain the leaf nodes of leaf.conf and of the tests reach.
		{"JetStream domain", opts.JetStreamDomain, natscluster.Domain},
		{"leaf node port", opts.LeafNode.Port, 7422},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if t.Failed() {
		return
	}

	alone(opts, -1)
	s := run(t, "cluster.conf", opts)
	creds, err := auth.ReadCreds(d.workerCreds)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), append(creds.Options(), nats.RootCAs(d.caFile), nats.Timeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("worker credentials with the CA: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(s.ClientURL(), append(creds.Options(), nats.Timeout(5*time.Second))...); err == nil {
		nc.Close()
		t.Error("a client that does not trust the CA got in")
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.RootCAs(d.caFile), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client without credentials got in")
	}
}

// TestLeafConf fills in nats/leaf.conf, parses it with nats-server's parser,
// and starts it against a server from cluster.conf (alone on loopback), with
// their commented TLS blocks as they are and turned on: the leaf connects
// with the worker's credentials, and a worker beside it, on the same
// credentials, binds the queue and writes its node record through it, but
// not another node's.
func TestLeafConf(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls %v", tlsOn), func(t *testing.T) {
			d := newDeployment(t)
			hubOpts := parse(t, "cluster.conf", d.clusterConf(t, tlsOn))
			leafPort, err := strconv.Atoi(natstest.FreePort(t))
			if err != nil {
				t.Fatal(err)
			}
			alone(hubOpts, leafPort)
			if got := hubOpts.LeafNode.TLSConfig != nil; got != tlsOn {
				t.Fatalf("leaf node TLS of cluster.conf: %v, want %v", got, tlsOn)
			}
			hub := run(t, "cluster.conf", hubOpts)

			src, err := os.ReadFile("nats/leaf.conf")
			if err != nil {
				t.Fatal(err)
			}
			conf := strings.NewReplacer(
				"nats-1:7422", fmt.Sprintf("127.0.0.1:%d", leafPort),
				"nats-2:7422", fmt.Sprintf("localhost:%d", leafPort),
				"nats-3:7422", fmt.Sprintf("127.0.0.1:%d", leafPort),
				"/etc/ollamamax/gpu7.creds", d.workerCreds,
				"/etc/ollamamax/tls/ca.pem", d.caFile,
			).Replace(string(src))
			if tlsOn {
				conf = uncommentBlock(t, conf, "credentials: \""+d.workerCreds+"\"", "tls {")
			}
			opts := parse(t, "leaf.conf", conf)
			var remote *server.RemoteLeafOpts
			if len(opts.LeafNode.Remotes) == 1 {
				remote = opts.LeafNode.Remotes[0]
			}
			checks := []struct {
				name      string
				got, want any
			}{
				{"remotes", len(opts.LeafNode.Remotes), 1},
				{"nodes in the remote", strings.Count(string(src), `"nats-leaf://`), 3},
				{"remote URLs on the hub's leaf port", remote != nil && len(remote.URLs) > 0 && !slices.ContainsFunc(remote.URLs, func(u *url.URL) bool {
					return u.Port() != strconv.Itoa(leafPort)
				}), true},
				{"remote credentials", remote != nil && remote.Credentials == d.workerCreds, true},
				{"remote TLS", remote != nil && remote.TLSConfig != nil, tlsOn},
				{"client listener on loopback", opts.Host, "127.0.0.1"},
				{"JetStream of its own", opts.JetStream, false},
				{"auth of its own", len(opts.Users) + len(opts.Nkeys) + len(opts.TrustedOperators), 0},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
				}
			}
			if t.Failed() {
				return
			}
			opts.Port = -1
			leaf := run(t, "leaf.conf", opts)
			deadline := time.Now().Add(10 * time.Second)
			for hub.NumLeafNodes() != 1 || leaf.NumLeafNodes() != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the leaf did not connect within 10s")
				}
				time.Sleep(10 * time.Millisecond)
			}

			// The dispatcher's part, done by the admin on the cluster.
			admin, err := auth.ReadCreds(d.adminCreds)
			if err != nil {
				t.Fatal(err)
			}
			anc, err := nats.Connect(hub.ClientURL(), append(admin.Options(), nats.RootCAs(d.caFile))...)
			if err != nil {
				t.Fatal(err)
			}
			defer anc.Close()
			if _, err := queue.SetupConn(t.Context(), anc, queue.Options{}); err != nil {
				t.Fatal(err)
			}
			// The worker's, on the leaf, as cmd/worker --nats-creds does.
			creds, err := auth.ReadCreds(d.workerCreds)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(leaf.ClientURL(), creds.Options()...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			q, err := queue.SetupConn(ctx, nc, queue.Options{BindOnly: true})
			if err != nil {
				t.Fatalf("bind the queue through the leaf: %v", err)
			}
			if _, err := q.Nodes().Put(ctx, "node.gpu7", []byte(`{}`)); err != nil {
				t.Errorf("write its node record through the leaf: %v", err)
			}
			short, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			if _, err := q.Nodes().Put(short, "node.gpu8", []byte(`{}`)); err == nil {
				t.Error("wrote another node's record through the leaf")
			}
		})
	}
}
