package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// The subjects of the matrix: ollamaq.jobs.<model>.<class>.<requester>.
var (
	model   = job.EncodeModel("llama3.2:latest")
	other   = job.EncodeModel("mistral:latest")
	durable = job.ConsumerName("llama3.2:latest", job.Interactive)
	jobsOf  = func(class job.Class, requester string) string {
		return job.JobSubject("llama3.2:latest", class, requester)
	}
	nodeRec  = func(id string) string { return "$KV." + job.NodeBucket + "." + fleet.Key(id) }
	jsAPI    = func(s string) string { return "$JS.API." + s }
	nextJob  = jsAPI("CONSUMER.MSG.NEXT." + job.Stream + "." + durable)
	fetchOne = `{"batch":1,"no_wait":true}`
)

// TestPermissionMatrix tries, as every role, what issue 10's attacker did
// against an open fleet and what each role needs, against a real server in
// operator mode with credentials from this package: each forbidden action
// must be refused by the server, each allowed one must work.
func TestPermissionMatrix(t *testing.T) {
	d := deploy(t)
	ctx := t.Context()

	// The dispatcher applies streams/, as it does at start-up.
	if _, err := queue.SetupConn(ctx, d.connect("dispatcher"), queue.Options{}); err != nil {
		t.Fatalf("the dispatcher cannot apply streams/: %v", err)
	}
	// A worker creates the consumer of a model it serves.
	wjs, err := jetstream.New(d.connect("gpu1"))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := wjs.CreateOrUpdateConsumer(ctx, job.Stream, jetstream.ConsumerConfig{Durable: durable,
		FilterSubject: job.JobFilter("llama3.2:latest", job.Interactive), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("a worker cannot create a job consumer: %v", err)
	}

	tests := []struct {
		user string
		what string
		act  action
		want string // "allowed" or "refused"
	}{
		// Submitting: clients publish only under their own token, of the
		// models and classes their credentials allow.
		{"alice", "submit a job under her own token", jsPublish(jobsOf(job.Interactive, "alice")), "allowed"},
		{"alice", "submit a job under bob's token", jsPublish(jobsOf(job.Interactive, "bob")), "refused"},
		{"alice", "submit a job in the old layout, without a token", jsPublish(job.JobsPrefix + "." + model + ".interactive"), "refused"},
		{"carol", "submit batch work as a batch-only client", jsPublish(jobsOf(job.Batch, "carol")), "allowed"},
		{"carol", "submit interactive work as a batch-only client", jsPublish(jobsOf(job.Interactive, "carol")), "refused"},
		{"carol", "submit async work as a batch-only client", jsPublish(jobsOf(job.Async, "carol")), "refused"},
		{"alice", "submit async work as a client of every lane", jsPublish(jobsOf(job.Async, "alice")), "allowed"},
		{"erin", "submit async work as a client of the async and batch lanes", jsPublish(jobsOf(job.Async, "erin")), "allowed"},
		{"erin", "submit batch work as a client of the async and batch lanes", jsPublish(jobsOf(job.Batch, "erin")), "allowed"},
		{"erin", "submit interactive work as a client of the async and batch lanes", jsPublish(jobsOf(job.Interactive, "erin")), "refused"},
		{"dave", "submit for a model he is allowed", jsPublish(jobsOf(job.Interactive, "dave")), "allowed"},
		{"dave", "submit for another model", jsPublish(job.JobsPrefix + "." + other + ".interactive.dave"), "refused"},
		{"dispatcher", "submit under its own token", jsPublish(jobsOf(job.Interactive, "dispatcher")), "allowed"},
		{"dispatcher", "submit under alice's token", jsPublish(jobsOf(job.Interactive, "alice")), "refused"},
		{"gpu1", "submit a job", jsPublish(jobsOf(job.Interactive, "gpu1")), "refused"},

		// Reading prompts.
		{"alice", "read every prompt (ollamaq.jobs.>)", subscribe("ollamaq.jobs.>", jobsOf(job.Interactive, "bob")), "refused"},
		{"dispatcher", "read every prompt (ollamaq.jobs.>)", subscribe("ollamaq.jobs.>", jobsOf(job.Interactive, "bob")), "refused"},
		{"gpu1", "read every prompt (ollamaq.jobs.>)", subscribe("ollamaq.jobs.>", jobsOf(job.Interactive, "bob")), "refused"},
		{"alice", "read jobs from the stream", request(jsAPI("STREAM.MSG.GET."+job.Stream), `{"seq":1}`, nil, jsOK), "refused"},
		{"alice", "read the doorbells", subscribe("ollamaq.queued.>", job.QueuedPrefix+"."+model+".interactive.bob"), "refused"},
		{"gpu1", "hear the doorbells", subscribe("ollamaq.queued.>", job.QueuedPrefix+"."+model+".interactive.bob"), "allowed"},
		// A worker that hands back a job its Ollama cannot run rings for the others.
		{"gpu1", "ring the doorbell of any requester's job", publish(job.QueuedSubject("llama3.2:latest", job.Interactive, "bob")), "allowed"},

		// Taking jobs.
		{"alice", "take jobs (fetch) as a client", request(nextJob, fetchOne, nil, nil), "refused"},
		{"dispatcher", "take jobs (fetch) as a dispatcher", request(nextJob, fetchOne, nil, nil), "refused"},
		{"gpu2", "take a job (fetch) as a worker", fetchAndAck(cons.CachedInfo().Name), "allowed"},

		// Stalled deliveries: a dispatcher NAKs the delivery of a job whose
		// worker fell silent; a client may not touch any delivery.
		{"dispatcher", "NAK a job delivery", publish("$JS.ACK." + job.Stream + ".c.1.2.3.4.5"), "allowed"},
		{"alice", "NAK a job delivery", publish("$JS.ACK." + job.Stream + ".c.1.2.3.4.5"), "refused"},
		{"dispatcher", "ack a delivery of another stream", publish("$JS.ACK." + job.DLQStream + ".c.1.2.3.4.5"), "refused"},
		{"dispatcher", "ring the doorbell of its own job", publish(job.QueuedPrefix + "." + model + ".interactive.dispatcher"), "allowed"},
		{"dispatcher", "ring the doorbell of alice's job", publish(job.QueuedPrefix + "." + model + ".interactive.alice"), "refused"},
		{"alice", "ring a doorbell", publish(job.QueuedPrefix + "." + model + ".interactive.alice"), "refused"},

		// Replies: only the requester reads them; only workers write them.
		{"alice", "read every answer (ollamaq.reply.>)", subscribe("ollamaq.reply.>", "ollamaq.reply.bob.j1"), "refused"},
		{"dispatcher", "read every answer (ollamaq.reply.>)", subscribe("ollamaq.reply.>", "ollamaq.reply.bob.j1"), "refused"},
		{"gpu1", "read every answer (ollamaq.reply.>)", subscribe("ollamaq.reply.>", "ollamaq.reply.bob.j1"), "refused"},
		{"alice", "read bob's answers", subscribe("ollamaq.reply.bob.>", "ollamaq.reply.bob.j1"), "refused"},
		{"alice", "read her own answers", subscribe("ollamaq.reply.alice.>", "ollamaq.reply.alice.j1"), "allowed"},
		{"alice", "read batch results", subscribe("ollamaq.reply.batch.>", "ollamaq.reply.batch.b1.j1"), "refused"},
		// A batch ID is no tenant's: one named like her is not hers.
		{"alice", "read the results of a batch named alice", subscribe("ollamaq.reply.batch.alice.>", "ollamaq.reply.batch.alice.j1"), "refused"},
		{"alice", "submit for the batch requester", jsPublish(jobsOf(job.Batch, job.BatchRequester)), "refused"},
		{"gpu1", "read stored batch results", request(jsAPI("CONSUMER.CREATE."+job.ResultsStream), `{}`, nil, nil), "refused"},
		{"alice", "forge a reply into bob's stream", publish("ollamaq.reply.bob.j1"), "refused"},
		{"alice", "forge a result into a batch", publish("ollamaq.reply.batch.b1.j1"), "refused"},
		{"dispatcher", "forge a reply into alice's stream", publish("ollamaq.reply.alice.j1"), "refused"},
		{"gpu1", "send a reply to any requester", publish("ollamaq.reply.alice.j1"), "allowed"},

		// Resume requests: a forged one freezes the requester's stream.
		{"alice", "send bob a resume request", publish("ollamaq.resume.bob.j1"), "refused"},
		{"dispatcher", "send alice a resume request", publish("ollamaq.resume.alice.j1"), "refused"},
		{"alice", "listen to bob's resume requests", subscribe("ollamaq.resume.bob.>", "ollamaq.resume.bob.j1"), "refused"},
		{"gpu1", "listen to every resume request", subscribe("ollamaq.resume.>", "ollamaq.resume.bob.j1"), "refused"},
		{"alice", "answer a worker's resume request", answerResume("alice", "gpu1"), "allowed"},
		{"dispatcher", "answer a worker's resume request", answerResume("dispatcher", "gpu2"), "allowed"},

		// Canceling.
		{"alice", "cancel bob's job", publish("ollamaq.cancel.bob.j1"), "refused"},
		{"alice", "cancel her own job", publish("ollamaq.cancel.alice.j1"), "allowed"},
		{"gpu1", "hear cancels", subscribe("ollamaq.cancel.>", "ollamaq.cancel.alice.j1"), "allowed"},

		// PubAcks and request replies: own inbox only.
		{"alice", "read everyone's PubAcks (_INBOX.>)", subscribe("_INBOX.>", "_INBOX.x.y"), "refused"},
		{"alice", "read bob's PubAcks", subscribe("_INBOX_bob.>", "_INBOX_bob.x"), "refused"},
		{"gpu1", "read everyone's PubAcks (_INBOX.>)", subscribe("_INBOX.>", "_INBOX.x.y"), "refused"},
		{"dispatcher", "read everyone's PubAcks (_INBOX.>)", subscribe("_INBOX.>", "_INBOX.x.y"), "refused"},
		{"alice", "read her own inbox", subscribe("_INBOX_alice.>", "_INBOX_alice.x"), "allowed"},

		// The fleet: node records and node commands.
		{"gpu1", "write its own node record", jsPublish(nodeRec("gpu1")), "allowed"},
		{"gpu1", "write another node's record", jsPublish(nodeRec("gpu2")), "refused"},
		{"alice", "fake a fleet member's record", jsPublish(nodeRec("evil")), "refused"},
		{"dispatcher", "write a node record", jsPublish(nodeRec("evil")), "refused"},
		{"alice", "send a node command", publish(job.NodeSubject("gpu1")), "refused"},
		{"gpu2", "send a node command", publish(job.NodeSubject("gpu1")), "refused"},
		{"dispatcher", "send a node command", publish(job.NodeSubject("gpu1")), "allowed"},
		{"gpu1", "take its own node commands", subscribe(job.NodeSubject("gpu1"), job.NodeSubject("gpu1")), "allowed"},
		{"gpu1", "take another node's commands", subscribe(job.NodeSubject("gpu2"), job.NodeSubject("gpu2")), "refused"},
		{"gpu1", "take every node's commands", subscribe(job.NodePrefix+".>", job.NodeSubject("gpu2")), "refused"},
		{"dispatcher", "read the node bucket", watchBucket(job.NodeBucket, "node.>"), "allowed"},
		{"alice", "read the node bucket", watchBucket(job.NodeBucket, "node.>"), "refused"},
		{"gpu1", "read the node bucket (its peers' Ollama versions)", watchBucket(job.NodeBucket, "node.>"), "allowed"},

		// HTTP API keys: dispatchers read them and the MAC secret; only
		// the admin writes keys (ollamaq keys).
		{"dispatcher", "watch the API keys", watchBucket(job.KeyBucket, "key.*"), "allowed"},
		{"alice", "watch the API keys", watchBucket(job.KeyBucket, "key.*"), "refused"},
		{"gpu1", "watch the API keys", watchBucket(job.KeyBucket, "key.*"), "refused"},
		{"dispatcher", "read the MAC secret", request(jsAPI("DIRECT.GET.KV_"+job.KeyBucket+".$KV."+job.KeyBucket+"."+job.KeyMACEntry), "", nil, nil), "allowed"},
		{"gpu1", "read the MAC secret", request(jsAPI("DIRECT.GET.KV_"+job.KeyBucket+".$KV."+job.KeyBucket+"."+job.KeyMACEntry), "", nil, nil), "refused"},
		{"alice", "read the MAC secret", request(jsAPI("DIRECT.GET.KV_"+job.KeyBucket+".$KV."+job.KeyBucket+"."+job.KeyMACEntry), "", nil, nil), "refused"},
		{"dispatcher", "create the MAC secret", jsPublish("$KV." + job.KeyBucket + "." + job.KeyMACEntry), "allowed"},
		{"gpu1", "overwrite the MAC secret", jsPublish("$KV." + job.KeyBucket + "." + job.KeyMACEntry), "refused"},
		{"dispatcher", "write an API key", jsPublish("$KV." + job.KeyBucket + ".key.evil"), "refused"},
		{"alice", "write an API key", jsPublish("$KV." + job.KeyBucket + ".key.evil"), "refused"},
		{"gpu1", "write an API key", jsPublish("$KV." + job.KeyBucket + ".key.evil"), "refused"},
		{"root", "write an API key", jsPublish("$KV." + job.KeyBucket + ".key.fine"), "allowed"},

		// Shared settings: each role watches its own entry; only the
		// admin writes them.
		{"dispatcher", "watch the dispatchers' shared settings", watchBucket(job.ConfigBucket, job.ConfigDispatcher), "allowed"},
		{"dispatcher", "watch the workers' shared settings", watchBucket(job.ConfigBucket, job.ConfigWorker), "refused"},
		{"gpu1", "watch the workers' shared settings", watchBucket(job.ConfigBucket, job.ConfigWorker), "allowed"},
		{"gpu1", "watch the dispatchers' shared settings", watchBucket(job.ConfigBucket, job.ConfigDispatcher), "refused"},
		{"alice", "watch the dispatchers' shared settings", watchBucket(job.ConfigBucket, job.ConfigDispatcher), "refused"},
		{"dispatcher", "write the dispatchers' shared settings", jsPublish("$KV." + job.ConfigBucket + "." + job.ConfigDispatcher), "refused"},
		{"gpu1", "write the workers' shared settings", jsPublish("$KV." + job.ConfigBucket + "." + job.ConfigWorker), "refused"},
		{"alice", "write the dispatchers' shared settings", jsPublish("$KV." + job.ConfigBucket + "." + job.ConfigDispatcher), "refused"},
		{"root", "write the workers' shared settings", jsPublish("$KV." + job.ConfigBucket + "." + job.ConfigWorker), "allowed"},

		// The audit trail: workers write job records, dispatchers any;
		// nobody but the admin reads it.
		{"gpu1", "write a job's audit record", jsPublish(job.AuditSubject(job.AuditJob, "llama3.2:latest", "alice")), "allowed"},
		{"gpu1", "forge a management audit record", jsPublish(job.AuditSubject(job.AuditAdmin, "", "dispatcher")), "refused"},
		{"alice", "forge an audit record", jsPublish(job.AuditSubject(job.AuditJob, "llama3.2:latest", "alice")), "refused"},
		{"dispatcher", "write a management audit record", jsPublish(job.AuditSubject(job.AuditAdmin, "llama3.2:latest", "dispatcher")), "allowed"},
		{"dispatcher", "read the audit trail", request(jsAPI("CONSUMER.CREATE."+job.AuditStream), `{"stream_name":"`+job.AuditStream+`","config":{}}`, nil, nil), "refused"},
		{"alice", "read the audit trail", request(jsAPI("CONSUMER.CREATE."+job.AuditStream), `{"stream_name":"`+job.AuditStream+`","config":{}}`, nil, nil), "refused"},

		// Rate-limit charges: each dispatcher its own; all read them.
		{"dispatcher", "charge its own rate limits", jsPublish(job.LimitsSubject("dispatcher")), "allowed"},
		{"dispatcher", "forge another dispatcher's charges", jsPublish(job.LimitsSubject("d2")), "refused"},
		{"alice", "forge a rate-limit charge", jsPublish(job.LimitsSubject("alice")), "refused"},
		{"gpu1", "forge a rate-limit charge", jsPublish(job.LimitsSubject("gpu1")), "refused"},
		{"dispatcher", "follow every dispatcher's charges", followLimits, "allowed"},
		{"alice", "follow the rate-limit charges", followLimits, "refused"},

		// Dead letters.
		{"gpu1", "bury a job", jsPublish(job.DLQSubject(jobsOf(job.Interactive, "alice"))), "allowed"},
		{"alice", "forge a dead letter", jsPublish(job.DLQSubject(jobsOf(job.Interactive, "alice"))), "refused"},

		// Streams: only the dispatcher applies streams/, nobody but the admin
		// deletes or purges.
		{"alice", "bind the queue (queue.Open)", openQueue, "allowed"},
		{"gpu1", "bind the queue (queue.Open)", openQueue, "allowed"},
		{"alice", "purge OLLAMAQ_JOBS", request(jsAPI("STREAM.PURGE."+job.Stream), "", nil, nil), "refused"},
		{"alice", "delete OLLAMAQ_JOBS", request(jsAPI("STREAM.DELETE."+job.Stream), "", nil, nil), "refused"},
		{"gpu1", "purge OLLAMAQ_JOBS", request(jsAPI("STREAM.PURGE."+job.Stream), "", nil, nil), "refused"},
		{"gpu1", "delete OLLAMAQ_JOBS", request(jsAPI("STREAM.DELETE."+job.Stream), "", nil, nil), "refused"},
		{"gpu1", "update OLLAMAQ_JOBS", updateJobs, "refused"},
		{"gpu1", "create a stream", request(jsAPI("STREAM.CREATE.EVIL"), `{"name":"EVIL","subjects":["ollamaq.reply.>"]}`, nil, nil), "refused"},
		{"dispatcher", "purge OLLAMAQ_JOBS", request(jsAPI("STREAM.PURGE."+job.Stream), "", nil, nil), "refused"},
		{"dispatcher", "delete OLLAMAQ_JOBS", request(jsAPI("STREAM.DELETE."+job.Stream), "", nil, nil), "refused"},
		{"dispatcher", "create a stream of its own", request(jsAPI("STREAM.CREATE.EVIL"), `{"name":"EVIL","subjects":["ollamaq.reply.>"]}`, nil, nil), "refused"},
		{"dispatcher", "update OLLAMAQ_JOBS (apply streams/)", updateJobs, "allowed"},
		{"dispatcher", "delete a queued job", request(jsAPI("STREAM.MSG.DELETE."+job.Stream), `{"seq":1}`, nil, nil), "allowed"},
		{"alice", "delete a queued job", request(jsAPI("STREAM.MSG.DELETE."+job.Stream), `{"seq":1}`, nil, nil), "refused"},

		// The admin may do everything, last of all delete the queue.
		{"root", "read every answer", subscribe("ollamaq.reply.>", "ollamaq.reply.bob.j1"), "allowed"},
		{"root", "purge OLLAMAQ_JOBS", request(jsAPI("STREAM.PURGE."+job.Stream), "", nil, jsOK), "allowed"},
		{"root", "delete OLLAMAQ_JOBS", request(jsAPI("STREAM.DELETE."+job.Stream), "", nil, jsOK), "allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.user+" "+tt.what, func(t *testing.T) {
			nc, err := d.dial(tt.user)
			if err != nil {
				t.Fatalf("connect as %s: %v", tt.user, err)
			}
			defer nc.Close()
			if got := outcome(tt.act(d, nc)); got != tt.want {
				t.Errorf("%s: %s: got %s, want %s", tt.user, tt.what, got, tt.want)
			}
		})
	}
}

// fetchAndAck takes one job from the consumer and acknowledges it, as a
// worker does.
func fetchAndAck(consumer string) action {
	return func(d *deployment, nc *nats.Conn) error {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, err := js.Consumer(ctx, job.Stream, consumer)
		if err != nil {
			return errors.Join(err, refused(nc))
		}
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			return errors.Join(err, refused(nc))
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := m.DoubleAck(ctx); err != nil {
				return errors.Join(err, refused(nc))
			}
		}
		if err := errors.Join(batch.Error(), refused(nc)); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("fetched %d jobs, want 1", n)
		}
		return nil
	}
}

// answerResume has a worker ask requester how much of a job it has, and
// the requester answer, as queue.Requester does.
func answerResume(requester, worker string) action {
	return func(d *deployment, nc *nats.Conn) error {
		subject := job.ResumeSubject(requester, "j1")
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(`{"frames":0}`)) })
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := refused(nc); err != nil {
			return err
		}
		w, err := d.dial(worker)
		if err != nil {
			return err
		}
		defer w.Close()
		if _, err := w.Request(subject, []byte(`{"attempt":2}`), wait); err != nil {
			return errors.Join(fmt.Errorf("the worker got no answer: %w", err), refused(nc), refused(w))
		}
		return nil
	}
}

// watchBucket reads a bucket's keys matching filter as the dispatcher's
// fleet view and key cache do.
func watchBucket(bucket, filter string) action {
	return func(d *deployment, nc *nats.Conn) error {
		return watch(nc, bucket, filter)
	}
}

// followLimits follows the rate-limit charges as a dispatcher's limiter does.
func followLimits(d *deployment, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, job.LimitsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{job.LimitsPrefix + ".>"}})
	if err != nil {
		return errors.Join(err, refused(nc))
	}
	if _, err := c.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err != nil {
		return errors.Join(err, refused(nc))
	}
	return refused(nc)
}

func watch(nc *nats.Conn, bucket, filter string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return errors.Join(err, refused(nc))
	}
	w, err := kv.Watch(ctx, filter)
	if err != nil {
		return errors.Join(err, refused(nc))
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // The initial values are in.
				return refused(nc)
			}
		case <-ctx.Done():
			return errors.Join(ctx.Err(), refused(nc))
		}
	}
}

// openQueue binds the queue as a client or worker does before it works.
func openQueue(d *deployment, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := queue.Open(ctx, js); err != nil {
		return errors.Join(err, refused(nc))
	}
	return nil
}

// updateJobs sends OLLAMAQ_JOBS's own configuration back as an update.
func updateJobs(d *deployment, nc *nats.Conn) error {
	m, err := d.admin.Request(jsAPI("STREAM.INFO."+job.Stream), nil, wait)
	if err != nil {
		return err
	}
	var info struct {
		Config json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return err
	}
	return request(jsAPI("STREAM.UPDATE."+job.Stream), string(info.Config), nil, jsOK)(d, nc)
}

// TestRevokedUser revokes a connected user: the server must close its
// connection within 5 seconds and refuse it from then on, also after a
// restart, even one with an auth directory that predates the revocation.
func TestRevokedUser(t *testing.T) {
	d := deploy(t)
	told := make(chan error, 16)
	alice, err := d.dial("alice", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case told <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob := d.connect("bob")
	before, err := readAccountJWT(d)
	if err != nil {
		t.Fatal(err)
	}

	u, accountJWT, err := d.dir.Revoke("alice")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if u.RevokedAt == nil {
		t.Errorf("Revoke returned %+v, want RevokedAt set", u)
	}
	sys := d.connect("sys")
	pushed := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := authPush(ctx, sys, accountJWT); err != nil {
		t.Fatalf("PushAccount: %v", err)
	}
	pollUntil(t, 5*time.Second, "the revoked user's connection closed", alice.IsClosed)
	t.Logf("closed %s after the push", time.Since(pushed).Round(time.Millisecond))
	// The server says why before it closes the connection (LastError is
	// then the EOF that followed).
	select {
	case err := <-told:
		if !errors.Is(err, nats.ErrAuthRevoked) {
			t.Errorf("the revoked connection was told %v, want %v", err, nats.ErrAuthRevoked)
		}
	case <-time.After(wait):
		t.Errorf("the revoked connection was not told why; last error %v", alice.LastError())
	}
	if !bob.IsConnected() {
		t.Error("revoking alice closed bob's connection")
	}

	check := func(when string) {
		t.Helper()
		if nc, err := d.dial("alice"); !errors.Is(err, nats.ErrAuthorization) {
			if nc != nil {
				nc.Close()
			}
			t.Errorf("%s: connect as the revoked user: %v, want %v", when, err, nats.ErrAuthorization)
		}
		nc, err := d.dial("bob")
		if err != nil {
			t.Errorf("%s: connect as bob: %v", when, err)
			return
		}
		nc.Close()
	}
	check("after the push")
	d.restart()
	check("after a restart")
	// An auth directory that does not know of the revocation (it was pushed
	// by another copy, or by nsc) must not undo it: the resolver keeps it.
	if err := writeAccountJWT(d, before); err != nil {
		t.Fatal(err)
	}
	d.restart()
	check("after a restart with an older account JWT in the auth directory")
}
