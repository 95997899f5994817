package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the raw loop's stream and subjects, apart from OllamaMax's.
const (
	rawStream  = "BENCH_RAW"
	rawSubject = "benchraw.jobs"
	rawReplies = "benchraw.reply"
	rawHeader  = "Bench-Reply"
)

// rawLoop is the JetStream engine's own job round trip, with none of
// OllamaMax's code: requesters publish a job (waiting for the PubAck) with a
// reply subject in a header and wait on one wildcard subscription; a
// responder on a second connection pulls with Consume, publishes the reply on
// core NATS and acks. The stream has the storage and retention of
// OLLAMAQ_JOBS (file, work queue, one replica); it has no duplicate window
// use, no republish and no TTL headers, and the ack is a plain Ack, not the
// worker's DoubleAck.
type rawLoop struct {
	req, resp *nats.Conn
	js        jetstream.JetStream
	cc        jetstream.ConsumeContext
	replies   *nats.Subscription
	body      []byte
	seq       atomic.Uint64
	ackErrs   atomic.Int64

	mu      sync.Mutex
	waiting map[string]chan struct{}
}

// startRawLoop sets up the stream, the consumer and both connections on
// the server at url. body is the job body and answer is the reply payload.
func startRawLoop(ctx context.Context, url string, body, answer []byte) (*rawLoop, error) {
	r := &rawLoop{body: body, waiting: map[string]chan struct{}{}}
	var err error
	if r.req, err = nats.Connect(url, nats.Name("bench-raw-requester")); err != nil {
		return nil, fmt.Errorf("connect raw requester: %w", err)
	}
	if r.resp, err = nats.Connect(url, nats.Name("bench-raw-responder")); err != nil {
		r.req.Close()
		return nil, fmt.Errorf("connect raw responder: %w", err)
	}
	if err := r.setup(ctx, answer); err != nil {
		r.close(ctx)
		return nil, err
	}
	return r, nil
}

func (r *rawLoop) setup(ctx context.Context, answer []byte) error {
	var err error
	if r.js, err = jetstream.New(r.req); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: rawStream, Subjects: []string{rawSubject},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 1}); err != nil {
		return fmt.Errorf("create stream %s: %w", rawStream, err)
	}
	rjs, err := jetstream.New(r.resp)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	cons, err := rjs.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{Durable: "raw",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1024})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	if r.replies, err = r.req.Subscribe(rawReplies+".>", r.route); err != nil {
		return fmt.Errorf("subscribe replies: %w", err)
	}
	if err := r.replies.SetPendingLimits(-1, 256<<20); err != nil {
		return fmt.Errorf("subscribe replies: %w", err)
	}
	r.cc, err = cons.Consume(func(m jetstream.Msg) {
		if err := r.resp.Publish(m.Headers().Get(rawHeader), answer); err != nil {
			r.ackErrs.Add(1)
		}
		if err := m.Ack(); err != nil {
			r.ackErrs.Add(1)
		}
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	return nil
}

// route hands a reply to the requester waiting for it.
func (r *rawLoop) route(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	r.mu.Lock()
	ch := r.waiting[id]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// op is one round trip: publish, then wait for the reply.
func (r *rawLoop) op(ctx context.Context) error {
	id := strconv.FormatUint(r.seq.Add(1), 10)
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
	}()
	m := nats.NewMsg(rawSubject)
	m.Header.Set(rawHeader, rawReplies+"."+id)
	m.Data = r.body
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for reply: %w", ctx.Err())
	}
}

// close stops consuming, deletes the stream and closes both connections.
func (r *rawLoop) close(ctx context.Context) {
	if r.cc != nil {
		r.cc.Stop()
	}
	if r.js != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = r.js.DeleteStream(dctx, rawStream) // The server goes away with the scenario anyway.
		cancel()
	}
	r.req.Close()
	r.resp.Close()
}
