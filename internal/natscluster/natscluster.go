// Package natscluster starts, inside a test, a nats-server cluster with
// JetStream on loopback (three nodes by default, each with its own store
// directory and fixed ports, so that a node can be shut down and started
// again as it was) and leaf nodes that dial into it, the way a GPU box that
// can only dial out attaches: open (no auth) or in operator mode on an auth
// directory of pkg/auth, as deploy/nats/cluster.conf and deploy/nats/leaf.conf
// configure them. Helpers find a stream's leader and wait, polling with a
// deadline, for the cluster to be ready again.
//
// It imports nats-server, nats.go, the auth package and internal/natstest; it
// must not import the queue, dispatcher or worker packages.
package natscluster

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// Domain is the JetStream domain of the cluster. A leaf node reaches the
// cluster's JetStream through $JS.<Domain>.API: nats-server keeps the plain
// $JS.API of an account that is not the system account from crossing a leaf
// connection, and the leaf maps its clients' $JS.API and $KV subjects there
// (deploy/nats/leaf.conf does the same).
const Domain = "ollamamax"

// Wait bounds every wait of the package for the cluster or a leaf to be
// ready: a fresh cluster elects its meta leader after nats-server's election
// timeout (4 to 9 s).
const Wait = 30 * time.Second

// Options shape the cluster.
type Options struct {
	// Servers is the number of nodes; default 3.
	Servers int
	// AuthDir, if set, runs every node in operator mode on this auth
	// directory (pkg/auth): it trusts the directory's operator and resolves
	// accounts with a full directory resolver of its own, seeded with the
	// directory's account JWTs, as ollamaq auth export configures a cluster.
	// Every client then needs credentials.
	AuthDir string
	// Logger receives the servers' logs; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running cluster. Everything stops when the test ends.
type Cluster struct {
	t       testing.TB
	name    string
	nodes   []*Node
	account string // the account the OllamaMax streams are in
	logger  *slog.Logger
	mu      sync.Mutex
	leaves  int // leaf nodes started, for their names
}

// Node is one server of the cluster: its configuration file, store directory
// and ports stay when it is shut down, so Restart brings back the same server.
type Node struct {
	Name        string
	ConfigFile  string
	StoreDir    string
	ClientPort  int
	ClusterPort int
	LeafPort    int

	mu sync.Mutex
	s  *server.Server // nil while shut down
}

// Start runs the cluster and returns once it is ready (Ready).
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Servers == 0 {
		o.Servers = 3
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A name of its own: a route that reaches another test's node (a port
	// reused between two processes' tests) is refused instead of joining
	// the two clusters.
	c := &Cluster{t: t, name: fmt.Sprintf("ollamamax-%x", rand.Uint64()), account: server.DEFAULT_GLOBAL_ACCOUNT, logger: logger}
	var trust *auth.Trust
	if o.AuthDir != "" {
		var err error
		if trust, err = auth.LoadTrust(o.AuthDir); err != nil {
			t.Fatalf("natscluster: %v", err)
		}
		for _, a := range trust.Accounts {
			if a.Name == auth.AccountName {
				c.account = a.PublicKey
			}
		}
	}
	t.Cleanup(c.shutdownAll)
	// The ports were free a moment ago; another test process may take one
	// before its node binds it. Then all start again on fresh ports.
	for try := 1; ; try++ {
		err := c.startOnFreePorts(o.Servers, trust)
		if err == nil {
			break
		}
		c.shutdownAll()
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	c.Ready()
	return c
}

// startOnFreePorts writes the configuration of n nodes on ports free now
// and starts them all.
func (c *Cluster) startOnFreePorts(servers int, trust *auth.Trust) error {
	t := c.t
	c.nodes = nil
	var routes []string
	for i := range servers {
		n := &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			StoreDir:    t.TempDir(),
			ClientPort:  freePort(t),
			ClusterPort: freePort(t),
			LeafPort:    freePort(t),
		}
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.ClusterPort))
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		conf := fmt.Sprintf(nodeConf, n.Name, n.ClientPort, filepath.ToSlash(n.StoreDir), Domain,
			c.name, n.ClusterPort, strings.Join(routes, ", "), n.LeafPort)
		if trust != nil {
			// What ollamaq auth export prints for every server of a cluster.
			conf += trust.ServerConfig(filepath.Join(n.StoreDir, "resolver"))
		}
		n.ConfigFile = filepath.Join(t.TempDir(), n.Name+".conf")
		if err := os.WriteFile(n.ConfigFile, []byte(conf), 0o600); err != nil {
			return err
		}
	}
	// Every node starts before any waits: the first one cannot elect a meta
	// leader alone.
	for _, n := range c.nodes {
		s, err := run(n.ConfigFile, n.Name, c.logger)
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.s = s
		n.mu.Unlock()
	}
	return nil
}

// nodeConf is a node's configuration: name, client port, store directory,
// JetStream domain, cluster name, cluster port, routes, leaf node port.
const nodeConf = `server_name: %s
listen: 127.0.0.1:%d
max_payload: 8MB
jetstream {
  store_dir: '%s'
  domain: %s
}
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
}
leafnodes {
  listen: 127.0.0.1:%d
}
`

func freePort(t testing.TB) int {
	t.Helper()
	p, err := strconv.Atoi(natstest.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts a server from the configuration file path and returns once it
// accepts clients.
func run(path, name string, logger *slog.Logger) (*server.Server, error) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("natscluster: %s: %w", name, err)
	}
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		if opts.AccountResolver != nil {
			opts.AccountResolver.Close()
		}
		return nil, fmt.Errorf("natscluster: start %s: %w", name, err)
	}
	logs := &logAdapter{l: logger.With("server", name)}
	s.SetLoggerV2(logs, false, false, false)
	s.Start()
	if err := logs.fatal(); err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("natscluster: start %s: %w", name, err)
	}
	if !s.ReadyForConnections(Wait) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("natscluster: %s not ready for connections within %s", name, Wait)
	}
	return s, nil
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	s, err := run(n.ConfigFile, n.Name, c.logger)
	if err != nil {
		c.t.Fatal(err)
	}
	n.mu.Lock()
	n.s = s
	n.mu.Unlock()
}

func (c *Cluster) shutdownAll() {
	for i := range c.nodes {
		c.Shutdown(i)
	}
}

// Name is the cluster's name, unique to it.
func (c *Cluster) Name() string { return c.name }

// Nodes are the cluster's nodes, in order.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns node i.
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Account is the account the OllamaMax streams are in, as nats-server names
// it: the OLLAMAMAX account's public key in operator mode, else $G.
func (c *Cluster) Account() string { return c.account }

// Server returns the running server of node i, or nil while it is shut down.
func (c *Cluster) Server(i int) *server.Server {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s
}

// URL is the client URL of node i.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort) }

// URLs is the server list a client of node i connects with: node i first,
// then the others, comma-separated as nats.Connect takes it. With
// nats.DontRandomize the client connects to node i, and reconnects to the
// others when it goes down.
func (c *Cluster) URLs(i int) string {
	urls := []string{c.nodes[i].URL()}
	for j, n := range c.nodes {
		if j != i {
			urls = append(urls, n.URL())
		}
	}
	return strings.Join(urls, ",")
}

// Connect opens a connection to node i with the server list URLs(i), that
// reconnects for ever, closed when the test ends.
func (c *Cluster) Connect(i int, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.DontRandomize(), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(c.URLs(i), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.nodes[i].Name, err)
	}
	c.t.Cleanup(nc.Close)
	return nc, nil
}

// Shutdown stops node i, as an operator stopping it would (its raft groups
// hand their leadership over first), and waits for it. It is idempotent.
func (c *Cluster) Shutdown(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	s := n.s
	n.s = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again, shut down, from its configuration file, on
// its ports and store directory, and returns once it accepts clients; Ready
// waits for it to have caught up.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Shutdown(i)
	c.start(i)
}

// running are the running servers.
func (c *Cluster) running() []*server.Server {
	var out []*server.Server
	for i := range c.nodes {
		if s := c.Server(i); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// MetaLeader returns the index of the node that leads the JetStream meta
// group, or -1 when there is none.
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the node that leads stream (in the
// OllamaMax account), or -1 when there is none.
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(c.account, stream) {
			return i
		}
	}
	return -1
}

// ConsumerLeader returns the index of the node that leads the consumer of
// stream, or -1 when there is none.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsConsumerLeader(c.account, stream, consumer) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until stream has a leader and returns its node.
func (c *Cluster) WaitStreamLeader(stream string) int {
	c.t.Helper()
	leader := -1
	c.waitFor("a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream)
		return leader >= 0
	})
	return leader
}

// Ready waits until every running node is up to date: there is a meta
// leader that sees all of them as JetStream peers, and each reports itself
// healthy (meta group current, every stream and consumer it holds caught up).
func (c *Cluster) Ready() {
	c.t.Helper()
	c.waitFor("the cluster to be ready", func() bool { return c.ready() == nil })
}

// ready tells what the cluster still waits for, or nil.
func (c *Cluster) ready() error {
	running := c.running()
	leader := c.MetaLeader()
	if leader < 0 {
		return fmt.Errorf("no meta leader")
	}
	if peers := c.Server(leader).JetStreamClusterPeers(); len(peers) != len(running) {
		return fmt.Errorf("the meta leader sees %d peers of %d: %v", len(peers), len(running), peers)
	}
	for _, s := range running {
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("%s: meta group not current", s.Name())
		}
		if h := s.Healthz(nil); h.Status != "ok" || h.Error != "" {
			return fmt.Errorf("%s: healthz %s %s", s.Name(), h.Status, h.Error)
		}
	}
	return nil
}

// waitFor polls cond until it holds, failing the test after Wait.
func (c *Cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	waitFor(c.t, what, cond)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("natscluster: timed out after %s waiting for %s", Wait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logAdapter turns a server's log into slog records, and keeps the first
// Fatalf: nats-server calls it when it cannot listen or start JetStream, and
// carries on without them.
type logAdapter struct {
	l     *slog.Logger
	mu    sync.Mutex
	first error
}

func (a *logAdapter) fatal() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first
}

func (a *logAdapter) Fatalf(format string, v ...any) {
	a.mu.Lock()
	if a.first == nil {
		a.first = fmt.Errorf(format, v...)
	}
	a.mu.Unlock()
	a.log(slog.LevelError, format, v)
}

// log formats only what the handler keeps.
func (a *logAdapter) log(level slog.Level, format string, v []any) {
	if a.l.Enabled(context.Background(), level) {
		a.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

func (a *logAdapter) Noticef(format string, v ...any) { a.log(slog.LevelInfo, format, v) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.log(slog.LevelError, format, v) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.log(slog.LevelDebug, format, v) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.log(slog.LevelDebug, format, v) }
