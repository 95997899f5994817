// Package deploy_test checks that the files in deploy/ match the binaries
// and that nats-server accepts the cluster configuration.
package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/auth"
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

// help builds the command and returns its flags and its --help text.
func help(t *testing.T, cmd string) (map[string]bool, string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), cmd)
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/"+cmd).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", cmd, err, out)
	}
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

// TestClusterConf fills in the placeholders of nats/cluster.conf with an
// auth directory and certificates made here, parses it with nats-server's
// own parser, and starts a server from it (on loopback, without its peers):
// a worker's credentials with the CA get in, a client without the CA does not.
func TestClusterConf(t *testing.T) {
	src, err := os.ReadFile("nats/cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "gpu7.creds")
	if _, _, err := dir.AddUser("gpu7", auth.UserOptions{Role: auth.Worker, CredsFile: credsFile}); err != nil {
		t.Fatal(err)
	}
	trust, err := auth.LoadTrust(dir.Path())
	if err != nil {
		t.Fatal(err)
	}
	tlsDir, state := t.TempDir(), t.TempDir()
	ca := testcert.NewCA(t, "nats")
	ca.Server(tlsDir)
	if err := os.Rename(ca.File, filepath.Join(tlsDir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(tlsDir, "ca.pem")
	repl := []string{
		"OPERATOR_JWT", trust.OperatorJWT,
		"/etc/nats/tls/", tlsDir + "/",
		"/var/lib/nats/", state + "/",
	}
	for _, a := range trust.Accounts {
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
	path := filepath.Join(t.TempDir(), "cluster.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server cannot parse cluster.conf: %v", err)
	}
	if opts.AccountResolver != nil {
		t.Cleanup(opts.AccountResolver.Close)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"trusted operators", len(opts.TrustedOperators), 1},
		{"system account", opts.SystemAccount, trust.SystemAccount},
		{"plain users", len(opts.Users) + len(opts.Nkeys), 0},
		{"resolver", opts.AccountResolver != nil, true},
		{"client TLS", opts.TLSConfig != nil, true},
		{"route TLS", opts.Cluster.TLSConfig != nil, true},
		{"route TLS verifies", opts.Cluster.TLSConfig != nil && opts.Cluster.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert, true},
		{"JetStream", opts.JetStream, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if t.Failed() {
		return
	}

	// Run it alone on loopback without its cluster: the peers do not exist
	// here, and JetStream would wait for them.
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("start a server from cluster.conf: %v", err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from cluster.conf not ready within 10s")
	}
	creds, err := auth.ReadCreds(credsFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), append(creds.Options(), nats.RootCAs(caFile), nats.Timeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("worker credentials with the CA: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(s.ClientURL(), append(creds.Options(), nats.Timeout(5*time.Second))...); err == nil {
		nc.Close()
		t.Error("a client that does not trust the CA got in")
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.RootCAs(caFile), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client without credentials got in")
	}
}
