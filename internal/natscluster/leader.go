package natscluster

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// MoveStreamLeader makes node to the leader of stream: it asks the current
// leader to step down in favour of node to, through nc (a connection that
// may use the JetStream API: an admin's in operator mode), and waits until
// node to leads. A test places the leader this way before shutting a node
// down, to choose which connections the shutdown cuts.
func (c *Cluster) MoveStreamLeader(nc *nats.Conn, stream string, to int) {
	c.t.Helper()
	c.moveLeader(nc, fmt.Sprintf(server.JSApiStreamLeaderStepDownT, stream), "stream "+stream, to,
		func() int { return c.StreamLeader(stream) })
}

// MoveConsumerLeader is MoveStreamLeader for a consumer of stream.
func (c *Cluster) MoveConsumerLeader(nc *nats.Conn, stream, consumer string, to int) {
	c.t.Helper()
	c.moveLeader(nc, fmt.Sprintf(server.JSApiConsumerLeaderStepDownT, stream, consumer), "consumer "+consumer, to,
		func() int { return c.ConsumerLeader(stream, consumer) })
}

func (c *Cluster) moveLeader(nc *nats.Conn, subject, what string, to int, leader func() int) {
	c.t.Helper()
	req, err := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: c.nodes[to].Name}})
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(Wait)
	for {
		l := leader()
		if l == to {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natscluster: %s still led by node %d after %s, want %s", what, l, Wait, c.nodes[to].Name)
		}
		if l < 0 { // An election is under way.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		resp, err := nc.Request(subject, req, 5*time.Second)
		if err != nil {
			c.t.Fatalf("natscluster: step down the leader of %s: %v", what, err)
		}
		var r struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &r); err != nil || r.Error != nil {
			c.t.Fatalf("natscluster: step down the leader of %s: %s %v", what, resp.Data, err)
		}
		// The step-down starts an election: wait for its outcome.
		waitFor(c.t, "the leader of "+what+" to change", func() bool { n := leader(); return n >= 0 && n != l })
	}
}
