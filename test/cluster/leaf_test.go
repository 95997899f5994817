package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestLeafWorker runs the fleet's only worker behind a leaf node of its
// own, as on a GPU box that can only dial out, in both auth modes (in
// operator mode the leaf presents the worker's credentials): it serves
// answers with the text of an uninterrupted run; while the leaf is down no
// worker pulls and a job waits in the queue, and once the leaf is back the
// worker reconnects through it and serves the job.
func TestLeafWorker(t *testing.T) {
	for _, mode := range fleettest.AuthModes {
		t.Run(mode.Name, func(t *testing.T) {
			sim := simConfig(2000)
			// A short ack wait: a job delivered to a pull request that was
			// on its way from the leaf as it went down comes back soon.
			f := fleettest.Start(t, fleettest.Options{Cluster: true, Workers: 1, LeafWorkers: 1, Slots: 4, Sim: sim, Auth: mode.Auth, AckWait: ackWait})
			refs := newReferences(t, sim)
			leaf := f.Leaf(0)
			if leaf == nil || f.WorkerNode(0) != -1 {
				t.Fatalf("worker 0: leaf %v, node %d; want a leaf and no cluster node", leaf, f.WorkerNode(0))
			}
			if got := leaf.Server().NumClients(); got != 1 {
				t.Fatalf("the leaf has %d clients, want 1 (the worker)", got)
			}
			for i := range 4 {
				p := fmt.Sprintf("question %d from behind the leaf", i)
				if why := generate(t.Context(), f.URL, p, 20).complete(refs.text(p, 20)); why != "" {
					t.Errorf("%q: %s", p, why)
				}
			}

			if !mode.Auth {
				return // The restart below once, in the mode a GPU box runs in.
			}
			leaf.Shutdown()
			// The worker's pull requests leave with the leaf's connection:
			// the consumer holds none, and no worker can take a job.
			f.WaitFor("no pull request waiting", func() bool {
				info, err := consumerInfo(t, f)
				return err == nil && info.NumWaiting == 0
			})
			const p = "asked while the leaf is down"
			got := make(chan *answer, 1)
			go func() { got <- generate(t.Context(), f.URL, p, 20) }()
			f.WaitFor("the job in the stream", func() bool {
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				defer cancel()
				s, err := f.Queue.JetStream().Stream(ctx, job.Stream)
				return err == nil && s.CachedInfo().State.Msgs == 1
			})
			select {
			case a := <-got:
				t.Fatalf("answered while the only worker's leaf was down: %d %s", a.status, a.err)
			default:
			}
			leaf.Restart()
			select {
			case a := <-got:
				if why := a.complete(refs.text(p, 20)); why != "" {
					t.Errorf("%q: %s", p, why)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the job asked while the leaf was down was not answered within 20s of its restart")
			}
		})
	}
}

// TestLeafPermissions connects, in operator mode, a client without
// credentials of its own to a GPU box's leaf node, whose connection to the
// cluster has the worker role: what the worker role may do works through
// it, what it may not (docs/security.md, the permission matrix of pkg/auth)
// is refused, with no trace in the cluster; the leaf stays connected and its
// worker keeps serving.
func TestLeafPermissions(t *testing.T) {
	sim := simConfig(2000)
	f := fleettest.Start(t, fleettest.Options{Cluster: true, Workers: 1, LeafWorkers: 1, Sim: sim, Auth: true, Keys: true})
	refs := newReferences(t, sim)
	leaf := f.Leaf(0)
	// Anything on the box can use the leaf, with the worker's inbox (the
	// only one whose answers the cluster sends it).
	nc, err := leaf.Connect(nats.CustomInboxPrefix(auth.InboxPrefix("w0")), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	admin := f.NC
	ajs := f.Queue.JetStream()
	nodes := f.Queue.Nodes()
	keys, err := f.Queue.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Get(t.Context(), job.KeyMACEntry); err != nil {
		t.Fatalf("the admin reads the MAC secret: %v", err)
	}
	// A refused request gets no answer: the leaf does not forward it.
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(t.Context(), 500*time.Millisecond)
	}

	tests := []struct {
		what  string
		allow bool
		act   func() error // nil when it worked
	}{
		{"bind the job stream (STREAM.INFO)", true, func() error {
			_, err := js.Stream(t.Context(), job.Stream)
			return err
		}},
		{"write its own node record", true, func() error {
			kv, err := js.KeyValue(t.Context(), job.NodeBucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(t.Context(), "node.w0", []byte(`{}`))
			return err
		}},
		{"send a reply to any requester", true, func() error {
			return delivered(t, admin, nc, "ollamaq.reply.alice.j1")
		}},
		{"write another worker's node record", false, func() error {
			kv, err := js.KeyValue(t.Context(), job.NodeBucket)
			if err != nil {
				return err
			}
			ctx, cancel := short()
			defer cancel()
			_, err = kv.Put(ctx, "node.w9", []byte(`{}`))
			if _, gerr := nodes.Get(t.Context(), "node.w9"); !errors.Is(gerr, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("node.w9 in the bucket (put: %v, get: %v)", err, gerr)
			}
			return err
		}},
		{"submit a job", false, func() error {
			ctx, cancel := short()
			defer cancel()
			subject := job.JobSubject(model+":latest", job.Interactive, "w0")
			_, err := js.Publish(ctx, subject, []byte(`{"model":"llama3.2","prompt":"hi"}`))
			if m, gerr := mustStream(t, ajs).GetLastMsgForSubject(t.Context(), subject); gerr == nil {
				return fmt.Errorf("job stored at sequence %d (publish: %v)", m.Sequence, err)
			}
			return err
		}},
		{"read every answer (ollamaq.reply.>)", false, func() error {
			return subscribed(t, admin, nc, "ollamaq.reply.>", "ollamaq.reply.alice.j2")
		}},
		{"read the MAC secret of the key bucket", false, func() error {
			ctx, cancel := short()
			defer cancel()
			kv, err := js.KeyValue(ctx, job.KeyBucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, job.KeyMACEntry)
			return err
		}},
		{"watch the API keys", false, func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := js.OrderedConsumer(ctx, "KV_"+job.KeyBucket, jetstream.OrderedConsumerConfig{})
			return err
		}},
		{"delete the job stream", false, func() error {
			ctx, cancel := short()
			defer cancel()
			err := js.DeleteStream(ctx, job.Stream)
			if _, serr := ajs.Stream(t.Context(), job.Stream); serr != nil {
				return fmt.Errorf("the job stream is gone (delete: %v): %w", err, serr)
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			err := tt.act()
			if tt.allow && err != nil {
				t.Errorf("through the leaf: %v; want it allowed", err)
			}
			if !tt.allow && err == nil {
				t.Error("through the leaf: allowed; want it refused")
			}
			if !tt.allow && err != nil && !refusedByLeaf(err) {
				t.Errorf("through the leaf: %v; want no answer (a refusal)", err)
			}
		})
	}

	// The refusals were the leaf's: it forwarded nothing the cluster
	// would have cut it off for.
	if got := leaf.Server().NumLeafNodes(); got != 1 {
		t.Errorf("the leaf has %d connections to the cluster, want 1", got)
	}
	_, key := f.CreateKey(apikey.Key{Name: "probe", Tenant: "acme", Role: apikey.User})
	const p = "after the refusals"
	if why := generateWithKey(t.Context(), f.URL, key, p, 20).complete(refs.text(p, 20)); why != "" {
		t.Errorf("%q: %s", p, why)
	}
}

// consumerInfo is the consumer of the model's interactive jobs, as the
// fleet's own connection reads it. A consumer's leader answers for it, and
// nobody while one is elected: a poll asks again soon.
func consumerInfo(t *testing.T, f *fleettest.Fleet) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	cons, err := f.Queue.JetStream().Consumer(ctx, job.Stream, job.ConsumerName(model+":latest", job.Interactive))
	if err != nil {
		return nil, err
	}
	return cons.CachedInfo(), nil
}

// errNothing is what a subscription the leaf refused gets.
var errNothing = errors.New("nothing arrived")

// refusedByLeaf reports whether err is how a refusal looks through a leaf
// node: the leaf forwards nothing the cluster would refuse, and tells its
// client nothing, so a request has no responders or no answer, and a
// subscription gets nothing.
func refusedByLeaf(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, errNothing)
}

func mustStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// delivered publishes on subject through the leaf connection nc and
// returns nil once the admin has it.
func delivered(t *testing.T, admin, nc *nats.Conn, subject string) error {
	t.Helper()
	sub, err := admin.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := admin.Flush(); err != nil {
		return err
	}
	// The admin's interest reaches the leaf a moment later: publish until
	// one arrives.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := nc.Publish(subject, []byte("probe")); err != nil {
			return err
		}
		if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
			return nil
		}
	}
	return fmt.Errorf("nothing published on %s through the leaf arrived", subject)
}

// subscribed subscribes to subject through the leaf connection nc, the
// admin publishes probe, and it returns nil if the probe arrived. The
// control is a subscription of nc to a subject of the worker's inbox, which
// the worker role may read and nothing on the leaf subscribed to before:
// the leaf asks the cluster for it after subject, so once the admin's
// control message, published after the probe, arrives, the probe would
// have too.
func subscribed(t *testing.T, admin, nc *nats.Conn, subject, probe string) error {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	controlSubject := auth.InboxPrefix("w0") + ".control-" + nats.NewInbox()[len(nats.InboxPrefix):]
	control, err := nc.SubscribeSync(controlSubject)
	if err != nil {
		return err
	}
	defer func() { _ = control.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if time.Now().After(deadline) {
			return errors.New("the control subscription got nothing")
		}
		if err := admin.Publish(probe, []byte("probe")); err != nil {
			return err
		}
		if err := admin.Publish(controlSubject, []byte("control")); err != nil {
			return err
		}
		if _, err := control.NextMsg(50 * time.Millisecond); err == nil {
			break
		}
	}
	if _, err := sub.NextMsg(10 * time.Millisecond); err == nil {
		return nil
	}
	return fmt.Errorf("%w on %s", errNothing, subject)
}
