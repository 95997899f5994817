package natscluster_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natscluster"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// TestCluster starts a cluster in both auth modes and uses every helper: an
// R3 stream on all three nodes, its leader moved, shut down and restarted
// (the stream keeps its messages and a new leader takes over), and a leaf
// node through which a client publishes to the stream.
func TestCluster(t *testing.T) {
	for _, mode := range []struct {
		name string
		auth bool
	}{{"auth off", false}, {"auth on", true}} {
		t.Run(mode.name, func(t *testing.T) {
			var o natscluster.Options
			var opts []nats.Option
			var leafCreds string
			if mode.auth {
				d, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
				if err != nil {
					t.Fatal(err)
				}
				// The leaf presents an admin's credentials: this test is
				// about the helpers, test/cluster about the roles.
				if _, _, err := d.AddUser("root", auth.UserOptions{Role: auth.Admin, CredsFile: d.CredsPath("root")}); err != nil {
					t.Fatal(err)
				}
				c, err := auth.ReadCreds(d.CredsPath("root"))
				if err != nil {
					t.Fatal(err)
				}
				opts, leafCreds, o.AuthDir = c.Options(), d.CredsPath("root"), d.Path()
			}
			c := natscluster.Start(t, o)
			if got := len(c.Nodes()); got != 3 {
				t.Fatalf("%d nodes, want 3", got)
			}
			if c.MetaLeader() < 0 {
				t.Fatal("ready, but no meta leader")
			}
			nc, err := c.Connect(1, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := nc.ConnectedUrl(), c.Node(1).URL(); got != want {
				t.Errorf("connected to %s, want node 1 at %s", got, want)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			s, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3})
			if err != nil {
				t.Fatal(err)
			}
			peers := []string{s.CachedInfo().Cluster.Leader}
			for _, r := range s.CachedInfo().Cluster.Replicas {
				peers = append(peers, r.Name)
			}
			slices.Sort(peers)
			if want := []string{"n1", "n2", "n3"}; !slices.Equal(peers, want) {
				t.Errorf("stream on %v, want %v", peers, want)
			}
			if _, err := js.Publish(t.Context(), "s.1", []byte("before")); err != nil {
				t.Fatal(err)
			}

			c.MoveStreamLeader(nc, "S", 2)
			if got := c.StreamLeader("S"); got != 2 {
				t.Fatalf("leader %d after the move, want 2", got)
			}
			c.Shutdown(2)
			if c.Server(2) != nil {
				t.Error("node 2 still has a server after Shutdown")
			}
			if got := c.WaitStreamLeader("S"); got == 2 {
				t.Errorf("leader %d with node 2 down", got)
			}
			c.Restart(2)
			c.Ready()
			info, err := s.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != 1 {
				t.Errorf("%d messages after the restart, want 1", info.State.Msgs)
			}

			leaf := c.StartLeaf(t, natscluster.LeafOptions{Credentials: leafCreds})
			lnc, err := leaf.Connect(nats.ReconnectWait(50 * time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			ljs, err := jetstream.New(lnc)
			if err != nil {
				t.Fatal(err)
			}
			// Through the domain: the plain $JS.API does not cross a leaf.
			ack, err := ljs.Publish(t.Context(), "s.2", []byte("through the leaf"))
			if err != nil {
				t.Fatalf("publish through the leaf: %v", err)
			}
			if ack.Domain != natscluster.Domain {
				t.Errorf("PubAck from domain %q, want %q", ack.Domain, natscluster.Domain)
			}
			leaf.Restart()
			if _, err := ljs.Stream(t.Context(), "S"); err != nil {
				t.Errorf("stream info through the restarted leaf: %v", err)
			}
		})
	}
}
