package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/streams"
)

// Options adjust the definitions in streams/ to a deployment.
type Options struct {
	// Replicas of the job stream and the node bucket (consumers inherit it): 1
	// for a single server, 3 for a cluster. Zero keeps the existing streams'
	// value, or the files' for new streams.
	Replicas int
	// AckWait, if set, replaces the consumers' ack wait: how long a job may go
	// without an ack or in-progress signal before JetStream redelivers it
	// (10s in streams/consumer.json). Every worker must use the same value, or
	// their updates fight. There is deliberately no consumer BackOff: it would
	// also stretch the delays of the workers' NakWithDelay retries.
	AckWait time.Duration
	// BindOnly makes Setup create and update no stream: it waits, polling,
	// until each exists and matches its definition, or ctx ends. For a
	// process whose credentials may not manage streams (a worker with
	// worker credentials, docs/security.md): it can start before the
	// dispatcher applied streams/, without a permission violation.
	BindOnly bool
	// AuditRetention, if set, replaces how long the audit stream keeps its
	// records (90 days in streams/audit.json). Zero keeps the existing
	// stream's retention, so a process that does not set it never undoes
	// one that did.
	AuditRetention time.Duration
}

// bindPoll is how often Setup with BindOnly looks for the streams again.
const bindPoll = 100 * time.Millisecond

// Queue is a handle on the applied definitions. It is safe for concurrent use.
type Queue struct {
	js       jetstream.JetStream
	consumer jetstream.ConsumerConfig
	nodes    jetstream.KeyValue
	batches  jetstream.KeyValue // nil when Open finds a deployment that predates batches
}

// Setup creates or updates the streams and buckets of streams/*.json (jobs,
// nodes, dead letters, advisories, batch results and records) so that they
// match the files, and returns a handle on them. It is idempotent and is
// called by every dispatcher and worker at start-up.
func Setup(ctx context.Context, js jetstream.JetStream, o Options) (*Queue, error) {
	var cons jetstream.ConsumerConfig
	if err := readDefinition("consumer.json", &cons); err != nil {
		return nil, err
	}
	if o.AckWait > 0 {
		cons.AckWait = o.AckWait
	}
	cons.Replicas = 0 // Work-queue consumers must match the stream; 0 inherits it.
	for _, file := range streamFiles {
		var cfg jetstream.StreamConfig
		if err := readDefinition(file, &cfg); err != nil {
			return nil, err
		}
		if o.Replicas > 0 {
			cfg.Replicas = o.Replicas
		} else {
			cfg.Replicas = 0 // Keep what the deployment chose; see ensureStream.
		}
		keepAge := false
		if cfg.Name == job.AuditStream {
			if o.AuditRetention > 0 {
				cfg.MaxAge = o.AuditRetention
			} else {
				keepAge = true
			}
		}
		apply := applyStream
		if o.BindOnly {
			apply = awaitStream
		}
		if err := apply(ctx, js, cfg, keepAge); err != nil {
			return nil, err
		}
	}
	kv, err := js.KeyValue(ctx, job.NodeBucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", job.NodeBucket, err)
	}
	batches, err := js.KeyValue(ctx, job.BatchBucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", job.BatchBucket, err)
	}
	return &Queue{js: js, consumer: cons, nodes: kv, batches: batches}, nil
}

// Keys binds the bucket of HTTP API keys (pkg/apikey), which Setup applied.
func (q *Queue) Keys(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := q.js.KeyValue(ctx, job.KeyBucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", job.KeyBucket, err)
	}
	return kv, nil
}

// Config binds the bucket of shared settings (docs/operations.md,
// "Reloading configuration"), which Setup applied.
func (q *Queue) Config(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := q.js.KeyValue(ctx, job.ConfigBucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", job.ConfigBucket, err)
	}
	return kv, nil
}

// SetupConn is Setup on the JetStream of connection nc.
func SetupConn(ctx context.Context, nc *nats.Conn, o Options) (*Queue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return Setup(ctx, js, o)
}

// streamFiles are the stream definitions Setup applies, in order.
var streamFiles = []string{"jobs.json", "kv_nodes.json", "dlq.json", "advisories.json", "results.json", "kv_batches.json",
	"kv_keys.json", "audit.json", "limits.json", "kv_config.json"}

// Open binds to definitions a dispatcher or worker already applied, without
// changing them: what a client with no rights to manage streams needs.
func Open(ctx context.Context, js jetstream.JetStream) (*Queue, error) {
	var cons jetstream.ConsumerConfig
	if err := readDefinition("consumer.json", &cons); err != nil {
		return nil, err
	}
	if _, err := js.Stream(ctx, job.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("no OllamaMax queue on this NATS server: stream %s does not exist (start a dispatcher or worker first)", job.Stream)
		}
		return nil, fmt.Errorf("look up stream %s: %w", job.Stream, err)
	}
	kv, err := js.KeyValue(ctx, job.NodeBucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", job.NodeBucket, err)
	}
	// A deployment set up before batches existed has no batch bucket; the
	// rest of the queue works without it.
	batches, err := js.KeyValue(ctx, job.BatchBucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bind bucket %s: %w", job.BatchBucket, err)
	}
	return &Queue{js: js, consumer: cons, nodes: kv, batches: batches}, nil
}

func readDefinition(name string, v any) error {
	b, err := streams.FS.ReadFile(name)
	if err != nil {
		return fmt.Errorf("read streams/%s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse streams/%s: %w", name, err)
	}
	return nil
}

// applyStream creates one stream, or updates it when its configuration differs
// from cfg, retrying while a freshly started cluster has no JetStream meta
// leader yet (such requests get no answer). An unchanged stream is left alone:
// every process applies the definitions at start-up, and needless updates
// race with consumer creation inside nats-server 2.15.2 (seen with -race).
func applyStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, keepAge bool) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := ensureStream(attempt, js, cfg, keepAge)
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, context.DeadlineExceeded) && !storeFailed(err) || ctx.Err() != nil {
			return fmt.Errorf("apply stream %s: %w", cfg.Name, err)
		}
		if storeFailed(err) {
			select {
			case <-ctx.Done():
			case <-time.After(bindPoll):
			}
		}
	}
}

// storeFailed tells JetStream's "error creating store for stream" (10049):
// a node of a cluster failed to create its replica, and the meta leader
// dropped the assignment; created again, the stream is made afresh. Seen
// once in a CI run of test/cluster, on a freshly started three-node
// cluster.
func storeFailed(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == 10049 && api.Description == "error creating store for stream"
}

// awaitStream waits until the stream of cfg exists and covers cfg, changing
// nothing.
func awaitStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, keepAge bool) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.Stream(attempt, cfg.Name)
		cancel()
		if err == nil {
			keep(&cfg, s.CachedInfo().Config, keepAge)
			same, cerr := covers(s.CachedInfo().Config, cfg)
			if cerr != nil {
				return fmt.Errorf("await stream %s: %w", cfg.Name, cerr)
			}
			if same {
				return nil
			}
			err = fmt.Errorf("%w: its configuration differs from streams/", errStreamDiffers)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("await stream %s (a dispatcher applies streams/): %w", cfg.Name, errors.Join(ctx.Err(), err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(bindPoll):
		}
	}
}

// errStreamDiffers is why awaitStream still waits for a stream that exists.
var errStreamDiffers = errors.New("stream differs")

// keep copies into cfg what it leaves to the existing stream have: replicas
// when cfg's are 0, and with keepAge the retention.
func keep(cfg *jetstream.StreamConfig, have jetstream.StreamConfig, keepAge bool) {
	if cfg.Replicas == 0 {
		cfg.Replicas = have.Replicas
	}
	if keepAge {
		cfg.MaxAge = have.MaxAge
	}
}

// ensureStream applies one definition. Replicas 0 means: keep an existing
// stream's (a worker need not know the cluster size), else 1; keepAge keeps
// an existing stream's retention.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, keepAge bool) error {
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		cfg.Replicas = max(cfg.Replicas, 1)
		_, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // Another process created it a moment ago, from the same file.
		}
		return err
	case err != nil:
		return err
	}
	keep(&cfg, s.CachedInfo().Config, keepAge)
	same, err := covers(s.CachedInfo().Config, cfg)
	if err != nil || same {
		return err
	}
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// covers reports whether every field set in want has the same value in have
// (the server fills in defaults that want leaves out).
func covers[C jetstream.StreamConfig | jetstream.ConsumerConfig](have, want C) (bool, error) {
	var h, w map[string]any
	for _, p := range []struct {
		cfg C
		m   *map[string]any
	}{{have, &h}, {want, &w}} {
		b, err := json.Marshal(p.cfg)
		if err != nil {
			return false, err
		}
		if err := json.Unmarshal(b, p.m); err != nil {
			return false, err
		}
	}
	for k, v := range w {
		if !reflect.DeepEqual(h[k], v) {
			return false, nil
		}
	}
	return true, nil
}

// JetStream returns the JetStream handle the queue was set up with.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Nodes returns the node health and inventory bucket.
func (q *Queue) Nodes() jetstream.KeyValue { return q.nodes }

// Batches returns the bucket of batch records (docs/batch.md), or nil when
// Open found a deployment that predates batches.
func (q *Queue) Batches() jetstream.KeyValue { return q.batches }

// BatchCanceled reports whether batch id was canceled (docs/batch.md): its
// record in the batch bucket says so. A batch the bucket does not hold, or a
// deployment without batches, is not canceled. Workers ask before they run a
// batch job.
func (q *Queue) BatchCanceled(ctx context.Context, id string) (bool, error) {
	if q.batches == nil || !job.ValidToken(id) {
		return false, nil
	}
	e, err := q.batches.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get batch %s: %w", id, err)
	}
	var r struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return false, fmt.Errorf("decode batch %s: %w", id, err)
	}
	return r.State == job.BatchCanceled, nil
}

// AckWait is the consumers' ack wait.
func (q *Queue) AckWait() time.Duration { return q.consumer.AckWait }

// MaxDeliver is how many times a job is delivered before JetStream gives up on it.
func (q *Queue) MaxDeliver() int { return q.consumer.MaxDeliver }

// Consumer creates or updates the durable pull consumer for one model and
// class from streams/consumer.json and returns it.
func (q *Queue) Consumer(ctx context.Context, model string, c job.Class) (jetstream.Consumer, error) {
	cfg := q.consumer
	cfg.Durable = job.ConsumerName(model, c)
	cfg.Name = ""
	cfg.FilterSubject = job.JobFilter(model, c)
	// Leave an unchanged consumer alone, as applyStream does streams.
	if cons, err := q.js.Consumer(ctx, job.Stream, cfg.Durable); err == nil {
		if same, err := covers(cons.CachedInfo().Config, cfg); err == nil && same {
			return cons, nil
		}
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, job.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("apply consumer %s: %w", cfg.Durable, err)
	}
	return cons, nil
}

// Reaper creates or updates the advisory stream's shared consumer from
// streams/reaper.json and returns it.
func (q *Queue) Reaper(ctx context.Context) (jetstream.Consumer, error) {
	var cfg jetstream.ConsumerConfig
	if err := readDefinition("reaper.json", &cfg); err != nil {
		return nil, err
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, job.AdvisoryStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("apply consumer %s: %w", cfg.Durable, err)
	}
	return cons, nil
}

// HasConsumer reports whether a consumer exists for the model, that is, whether
// some worker has served it: jobs for such a model wait in the queue even
// while no worker for it is up.
func (q *Queue) HasConsumer(ctx context.Context, model string) (bool, error) {
	_, err := q.js.Consumer(ctx, job.Stream, job.ConsumerName(model, job.Interactive))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up consumer for %s: %w", model, err)
}

// ReapplyOnReconnect makes the process that applies streams/ (the
// dispatcher) apply them again in the background each time nc reconnects,
// until ctx ends: a restarted nats-server has lost the node bucket, which
// is kept in memory (streams/kv_nodes.json), and workers with worker
// credentials may not create it (Options.BindOnly). onErr, if not nil,
// gets a failed re-apply. It keeps nc's reconnect handler, calling it first.
func ReapplyOnReconnect(ctx context.Context, nc *nats.Conn, o Options, onErr func(error)) {
	prev := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(nc *nats.Conn) {
		if prev != nil {
			prev(nc)
		}
		go func() {
			if ctx.Err() != nil {
				return
			}
			actx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := SetupConn(actx, nc, o); err != nil && onErr != nil && ctx.Err() == nil {
				onErr(fmt.Errorf("re-apply streams/ after reconnect: %w", err))
			}
		}()
	})
}
