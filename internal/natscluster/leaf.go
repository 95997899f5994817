package natscluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// LeafOptions shape a leaf node.
type LeafOptions struct {
	// Credentials is the user credentials file the leaf presents to the
	// cluster (operator mode): every message between the leaf's clients and
	// the cluster then has that user's permissions. "" presents none.
	Credentials string
}

// Leaf is a leaf node server that dials into the cluster, as on a GPU box
// that can only dial out: it listens for clients on loopback, has no
// JetStream of its own and no auth of its own, and forwards its clients'
// JetStream API to the cluster's domain (Domain). Its clients connect
// without credentials of their own, or with the leaf's, which it ignores.
type Leaf struct {
	t          testing.TB
	c          *Cluster
	name       string
	configFile string
	port       int

	mu sync.Mutex
	s  *server.Server // nil while shut down
}

// leafConf is a leaf node's configuration: name, client port, remote URLs,
// credentials line, domain (twice).
const leafConf = `server_name: %s
listen: 127.0.0.1:%d
max_payload: 8MB
leafnodes {
  reconnect: "100ms"
  remotes: [
    {
      urls: [%s]
%s    }
  ]
}
mappings {
  "$JS.API.>": "$JS.%s.API.>"
  "$KV.>": "$JS.%s.API.$KV.>"
}
`

// StartLeaf runs a leaf node that dials every node of the cluster (it
// connects to one, and to another when that one goes down) and returns once
// the cluster has accepted its connection.
func (c *Cluster) StartLeaf(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	c.mu.Lock()
	c.leaves++
	name := fmt.Sprintf("leaf%d", c.leaves)
	c.mu.Unlock()
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats-leaf://127.0.0.1:%d", n.LeafPort))
	}
	creds := ""
	if o.Credentials != "" {
		creds = "      credentials: " + strconv.Quote(o.Credentials) + "\n"
	}
	l := &Leaf{t: t, c: c, name: name, port: freePort(t)}
	conf := fmt.Sprintf(leafConf, name, l.port, strings.Join(urls, ", "), creds, Domain, Domain)
	l.configFile = filepath.Join(t.TempDir(), name+".conf")
	if err := os.WriteFile(l.configFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Shutdown)
	l.start()
	return l
}

func (l *Leaf) start() {
	l.t.Helper()
	s, err := run(l.configFile, l.name, l.c.logger)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.s = s
	l.mu.Unlock()
	l.WaitConnected()
}

// WaitConnected waits until the leaf has its connection to the cluster.
func (l *Leaf) WaitConnected() {
	l.t.Helper()
	waitFor(l.t, l.name+" connected to the cluster", func() bool {
		s := l.Server()
		return s != nil && s.NumLeafNodes() == 1
	})
}

// Name is the leaf's server name.
func (l *Leaf) Name() string { return l.name }

// URL is the leaf's client URL.
func (l *Leaf) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", l.port) }

// ConfigFile is the leaf's configuration file.
func (l *Leaf) ConfigFile() string { return l.configFile }

// Server returns the leaf's server, or nil while it is shut down.
func (l *Leaf) Server() *server.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s
}

// Connect opens a connection to the leaf that reconnects for ever, closed
// when the test ends.
func (l *Leaf) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(l.URL(), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", l.name, err)
	}
	l.t.Cleanup(nc.Close)
	return nc, nil
}

// Shutdown stops the leaf and waits for it. It is idempotent.
func (l *Leaf) Shutdown() {
	l.mu.Lock()
	s := l.s
	l.s = nil
	l.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts the leaf again on its port and returns once it is
// connected to the cluster.
func (l *Leaf) Restart() {
	l.t.Helper()
	l.Shutdown()
	l.start()
}
