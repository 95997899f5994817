package queue_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestReapplyOnReconnect restarts the nats-server: the node bucket, kept
// in memory, is gone, and comes back once the connection that applies
// streams/ reconnected.
func TestReapplyOnReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg := broker.DefaultConfig(t.TempDir())
	cfg.Listen = addr
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown() })
	nc, err := nats.Connect("nats://"+addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	queue.ReapplyOnReconnect(t.Context(), nc, queue.Options{}, func(err error) { errs <- err })

	b.Shutdown()
	if b, err = broker.Start(cfg); err != nil {
		t.Fatal(err)
	}
	nodes := "KV_" + job.NodeBucket
	fleettest.WaitFor(t, 15*time.Second, "the node bucket applied again", func() bool {
		_, err := js.Stream(t.Context(), nodes)
		return err == nil
	})
	if _, err := js.Stream(t.Context(), job.Stream); errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after restart: %v", job.Stream, err)
	}
	select {
	case err := <-errs:
		t.Errorf("re-apply: %v", err)
	default:
	}
}
