// Package fleet is the live view of the workers: the node record each worker
// keeps in the ollamaq_nodes KV bucket, and a watcher that follows the bucket.
//
// It imports NATS, Ollama's api types and the job package.
package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Node states.
const (
	StateReady     = "ready"     // pulling jobs
	StateUnhealthy = "unhealthy" // its Ollama does not answer; not pulling
	StateDraining  = "draining"  // shutting down; finishing in-flight jobs
)

// Node is what a worker reports about itself, refreshed every heartbeat.
// Each record's TTL (RecordTTL) removes it when the worker stops refreshing it.
type Node struct {
	ID            string                     `json:"id"`
	State         string                     `json:"state"`
	OllamaURL     string                     `json:"ollama_url"`
	Labels        map[string]string          `json:"labels,omitempty"`
	OllamaVersion string                     `json:"ollama_version,omitempty"`
	Models        []api.ListModelResponse    `json:"models"`
	Loaded        []api.ProcessModelResponse `json:"loaded"`
	SlotsTotal    int                        `json:"slots_total"`
	SlotsBusy     int                        `json:"slots_busy"`
	SlotsPeak     int                        `json:"slots_peak"` // most jobs ever run at once
	// SlotsReserved are the slots only interactive jobs may take (the
	// worker's --interactive-reserve in force, docs/scheduling.md).
	SlotsReserved int   `json:"slots_reserved,omitempty"`
	JobsDone      int64 `json:"jobs_done"`
	JobsFailed    int64 `json:"jobs_failed"`
	// Served counts what the worker did for each model (canonical name)
	// since it started.
	Served    map[string]Counts `json:"served,omitempty"`
	LastError string            `json:"last_error,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Counts are what a worker did for one model since it started
// (Node.StartedAt). They only grow while it runs: two records of a node a
// while apart give its rates (ollamaq top).
type Counts struct {
	Jobs   int64 `json:"jobs"`             // jobs answered in full and acknowledged
	Failed int64 `json:"failed,omitempty"` // jobs ended with an error to the requester
	Tokens int64 `json:"tokens,omitempty"` // tokens generated, as Ollama counted them (eval_count, completion or output tokens)
	// Loads counts the jobs that found the model neither loaded (in the
	// worker's last look at Ollama's /api/ps) nor being run by another of
	// its jobs: each made Ollama load it, unloading another if memory was
	// short (a swap).
	Loads int64 `json:"loads,omitempty"`
}

// Key is the node's key in the bucket: node.<id>.
func Key(id string) string { return "node." + id }

// HasModel reports whether the node has the canonical model installed.
func (n *Node) HasModel(canonical string) bool {
	for _, m := range n.Models {
		if c, err := job.CanonicalModel(m.Model); err == nil && c == canonical {
			return true
		}
	}
	return false
}

// IsLoaded reports whether the node has the canonical model in memory.
func (n *Node) IsLoaded(canonical string) bool {
	for _, m := range n.Loaded {
		if c, err := job.CanonicalModel(m.Model); err == nil && c == canonical {
			return true
		}
	}
	return false
}

// RecordHeartbeats is how many heartbeats a node record outlives the last
// refresh by: a worker may miss two refreshes in a row (a busy machine, an
// Ollama slow to list its models: the inventory call may take a whole
// heartbeat) and stay in the fleet; after the third it is gone.
const RecordHeartbeats = 3

// RecordTTL is the time to live of a node record refreshed every heartbeat:
// RecordHeartbeats heartbeats in whole seconds (JetStream's unit), at least
// one; 9s at the default heartbeat of 3s. The bucket's max_age (15s,
// streams/kv_nodes.json) is only a ceiling, for records written without a
// TTL: a worker's heartbeat is at most 5s, so its records never reach it.
func RecordTTL(heartbeat time.Duration) time.Duration {
	return max((RecordHeartbeats * heartbeat).Round(time.Second), time.Second)
}

// Put writes the node record with a time to live of ttl (whole seconds, at
// least one; see RecordTTL) and returns its revision: a worker that stops
// refreshing it disappears from the bucket after ttl, and watchers see it go.
func Put(ctx context.Context, js jetstream.JetStream, n *Node, ttl time.Duration) (uint64, error) {
	b, err := json.Marshal(n)
	if err != nil {
		return 0, fmt.Errorf("encode node %s: %w", n.ID, err)
	}
	ttl = max(ttl.Round(time.Second), time.Second)
	// A raw publish to the key's subject: KV's Put cannot set a per-key TTL.
	ack, err := js.Publish(ctx, "$KV."+job.NodeBucket+"."+Key(n.ID), b, jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, fmt.Errorf("put node %s: %w", n.ID, err)
	}
	return ack.Sequence, nil
}

// View is a live copy of the bucket kept current by a KV watcher, so reads
// cost no round trip. It is safe for concurrent use.
type View struct {
	w       jetstream.KeyWatcher
	mu      sync.RWMutex
	nodes   map[string]*Node
	revs    map[string]uint64 // the revision of each node's last record seen
	changed chan struct{}     // closed and replaced on every update
	ready   chan struct{}
}

// Watch starts watching the bucket. Run applies the updates.
func Watch(ctx context.Context, kv jetstream.KeyValue) (*View, error) {
	w, err := kv.Watch(ctx, "node.>")
	if err != nil {
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	return &View{w: w, nodes: make(map[string]*Node), revs: make(map[string]uint64), changed: make(chan struct{}),
		ready: make(chan struct{})}, nil
}

// Run keeps the view current until ctx is done or the watcher fails.
func (v *View) Run(ctx context.Context) error {
	defer func() { _ = v.w.Stop() }() // Stopping an ended watcher can only fail harmlessly.
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-v.w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("fleet: node watcher closed")
			}
			if e == nil {
				if initial {
					initial = false
					close(v.ready)
				}
				continue
			}
			v.apply(e)
		}
	}
}

func (v *View) apply(e jetstream.KeyValueEntry) {
	id := strings.TrimPrefix(e.Key(), "node.")
	v.mu.Lock()
	defer v.mu.Unlock()
	close(v.changed)
	v.changed = make(chan struct{})
	if e.Operation() != jetstream.KeyValuePut {
		delete(v.nodes, id) // Deleted, purged, or expired (TTL marker).
		delete(v.revs, id)  // Nobody waits on a gone node for long (WaitRevision's timeout).
		return
	}
	v.revs[id] = e.Revision()
	var n Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		delete(v.nodes, id) // A record we cannot read is a node we cannot use.
		return
	}
	v.nodes[id] = &n
}

// WaitRevision waits until the view has seen revision rev of node id's
// record, or a later one, for at most timeout or until ctx is done; it
// reports whether it has. A worker's reply names the revision of the
// record it wrote after a change of its models, so that a listing served
// after the reply shows the change.
func (v *View) WaitRevision(ctx context.Context, id string, rev uint64, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		v.mu.RLock()
		seen, changed := v.revs[id], v.changed
		v.mu.RUnlock()
		if seen >= rev {
			return true
		}
		select {
		case <-changed:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Ready is closed once the view holds the bucket's initial contents.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Nodes returns the live nodes sorted by ID. The records must not be modified.
func (v *View) Nodes() []*Node {
	v.mu.RLock()
	out := make([]*Node, 0, len(v.nodes))
	for _, n := range v.nodes {
		out = append(out, n)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Node) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Node returns node id's live record and the revision of the bucket entry
// it came from; nil and 0 when the node has none. The record must not be
// modified.
func (v *View) Node(id string) (*Node, uint64) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := v.nodes[id]
	if n == nil {
		return nil, 0
	}
	return n, v.revs[id]
}

// HasModel reports whether any live node has the canonical model installed.
func (v *View) HasModel(canonical string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, n := range v.nodes {
		if n.HasModel(canonical) {
			return true
		}
	}
	return false
}

// Models merges the installed models of all live nodes: each model once, the
// most recently modified copy, newest first, as Ollama's /api/tags orders them.
// What only a newer Ollama lists (0.32's capabilities, details.context_length
// and embedding_length) comes from another copy of the same digest when the
// chosen one lacks it: in a fleet of mixed versions the listing shows what
// the newest Ollama knows of each model.
func (v *View) Models() []api.ListModelResponse {
	nodes := v.Nodes()
	out := merge(nodes, func(n *Node) []api.ListModelResponse { return n.Models },
		func(m api.ListModelResponse) (string, time.Time) { return m.Model, m.ModifiedAt })
	for i := range out {
		m := &out[i]
		if len(m.Capabilities) > 0 && m.Details.ContextLength != 0 && m.Details.EmbeddingLength != 0 {
			continue
		}
		for _, n := range nodes {
			for _, o := range n.Models {
				if o.Digest != m.Digest || o.Digest == "" {
					continue
				}
				if len(m.Capabilities) == 0 && len(o.Capabilities) > 0 {
					m.Capabilities = o.Capabilities
				}
				m.Details.ContextLength = cmp.Or(m.Details.ContextLength, o.Details.ContextLength)
				m.Details.EmbeddingLength = cmp.Or(m.Details.EmbeddingLength, o.Details.EmbeddingLength)
			}
		}
	}
	return out
}

// Loaded merges the loaded models of all live nodes, each model once with the
// latest expiry, longest time left first, as Ollama's /api/ps orders them.
func (v *View) Loaded() []api.ProcessModelResponse {
	return merge(v.Nodes(), func(n *Node) []api.ProcessModelResponse { return n.Loaded },
		func(m api.ProcessModelResponse) (string, time.Time) { return m.Model, m.ExpiresAt })
}

// merge lists each model of the nodes once, keeping the copy with the latest
// time, latest first. Like Ollama it sorts by whole seconds, stably, so ties
// keep each node's order.
func merge[M any](nodes []*Node, models func(*Node) []M, key func(M) (string, time.Time)) []M {
	seen := map[string]int{}
	out := []M{}
	for _, n := range nodes {
		for _, m := range models(n) {
			name, at := key(m)
			if c, err := job.CanonicalModel(name); err == nil {
				name = c
			}
			if i, ok := seen[name]; ok {
				if _, prev := key(out[i]); at.After(prev) {
					out[i] = m
				}
				continue
			}
			seen[name] = len(out)
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b M) int {
		_, ta := key(a)
		_, tb := key(b)
		return cmp.Compare(tb.Unix(), ta.Unix())
	})
	return out
}

// OllamaVersion returns the lowest Ollama version among live nodes (what a
// client can rely on), or "" when there are none.
func (v *View) OllamaVersion() string {
	low := ""
	for _, n := range v.Nodes() {
		if n.OllamaVersion != "" && (low == "" || job.CompareVersions(n.OllamaVersion, low) < 0) {
			low = n.OllamaVersion
		}
	}
	return low
}
