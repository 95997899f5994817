// Package natstest starts real in-process nats-servers with JetStream for tests.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/broker"
)

// Start runs a JetStream server in t.TempDir listening on a random loopback
// port, and shuts it down when the test ends.
func Start(t testing.TB) *broker.Broker {
	t.Helper()
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:-1"
	return StartWith(t, cfg)
}

// StartWith runs a server with cfg and shuts it down when the test ends.
func StartWith(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// Connect opens an in-process connection to b, closed when the test ends.
func Connect(t testing.TB, b *broker.Broker) *nats.Conn {
	t.Helper()
	nc, err := b.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
