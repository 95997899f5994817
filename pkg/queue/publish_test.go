package queue_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestPublishRetriesTooManyRequests: a burst of large jobs overflows what a
// stream buffers before it stores (the server's jetstream
// max_buffered_size, here 1 MiB), which JetStream refuses with 429 "too
// many requests". The same burst through Publish is stored whole, each job
// once: the refused publishes are tried again.
func TestPublishRetriesTooManyRequests(t *testing.T) {
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, NoSigs: true,
		MaxPayload: 1 << 20, StreamMaxBufferedSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	// A connection per publisher, as the dispatchers of a fleet have: one
	// connection would hand the server one publish at a time.
	const publishers = 16
	conns := make([]*nats.Conn, publishers)
	for i := range conns {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		conns[i] = nc
	}
	js, err := jetstream.New(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 900<<10)
	msg := func(id string) queue.Job {
		return queue.Job{ID: id, Model: "llava:latest", Class: job.Interactive, Route: "/api/chat",
			Reply: job.ReplySubject("t", id), Body: body, Wait: 30 * time.Second}
	}

	// The burst without retries: JetStream refuses some of it.
	var mu sync.Mutex
	refused := 0
	var wg sync.WaitGroup
	for round := range 4 {
		for i, nc := range conns {
			wg.Go(func() {
				js, _ := jetstream.New(nc) // Only fails for a nil connection.
				id := fmt.Sprintf("raw%d_%d", round, i)
				m := nats.NewMsg(job.JobSubject("llava:latest", job.Interactive, "t"))
				m.Data = body
				_, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(id))
				var api *jetstream.APIError
				if errors.As(err, &api) && api.Code == 429 {
					mu.Lock()
					refused++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if refused == 0 {
		t.Skip("the server stored every publish of the burst in time: nothing to retry on this machine")
	}
	t.Logf("%d of %d publishes refused with 429 without retries", refused, 4*publishers)
	st, err := js.Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The same burst through Publish.
	errs := make([]error, 4*publishers)
	for round := range 4 {
		for i, nc := range conns {
			wg.Go(func() {
				js, _ := jetstream.New(nc) // As above.
				q, err := queue.Setup(t.Context(), js, queue.Options{BindOnly: true})
				if err == nil {
					_, err = q.Publish(t.Context(), msg(fmt.Sprintf("job%d_%d", round, i)))
				}
				errs[round*publishers+i] = err
			})
		}
		wg.Wait()
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("job %d: %v", i, err)
		}
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(errs)) {
		t.Errorf("the stream holds %d jobs, want %d", info.State.Msgs, len(errs))
	}
}
