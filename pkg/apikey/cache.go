package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cache is a live copy of the key records, kept current by a KV watch: a
// check costs no round trip, and a revocation or rotation applies as soon
// as the watch delivers it (milliseconds). It is safe for concurrent use.
type Cache struct {
	w     jetstream.KeyWatcher
	mu    sync.RWMutex
	keys  map[string]Key
	ready chan struct{}
	rev   atomic.Uint64 // the bucket's latest revision the watch delivered
	stale atomic.Bool   // Guard found the watch behind the bucket
}

// ErrStale is returned by Authenticate while Guard finds the cache behind
// the bucket: a revocation might be missing, so no key is accepted (503).
var ErrStale = errors.New("apikey: the key cache is behind the bucket")

// Watch starts watching the bucket. Run applies the updates.
func Watch(ctx context.Context, kv jetstream.KeyValue) (*Cache, error) {
	// Every entry, the MAC secret's too, so that the revisions delivered
	// can be compared with the bucket's last one (Guard).
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("apikey: watch keys: %w", err)
	}
	return &Cache{w: w, keys: map[string]Key{}, ready: make(chan struct{})}, nil
}

// Guard checks every interval until ctx is done that the watch keeps up
// with the bucket: when the bucket's last revision is ahead of what the
// watch delivered at two checks in a row, the watch is stuck (nats.go could
// not re-create it, say), and Authenticate refuses every key with ErrStale
// until it catches up. A dispatcher that cannot see revocations must not
// accept keys.
func (c *Cache) Guard(ctx context.Context, kv jetstream.KeyValue, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var behind uint64 // the bucket's last revision the watch lacked at the last check
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := kv.Status(ctx)
		if err != nil {
			continue // The bucket cannot be asked: the watch cannot do better; judge next time.
		}
		last, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok || last.StreamInfo() == nil {
			continue
		}
		seq := last.StreamInfo().State.LastSeq
		switch {
		case c.rev.Load() >= seq:
			behind = 0
			c.stale.Store(false)
		case behind != 0 && c.rev.Load() < behind:
			c.stale.Store(true) // Still short of what it lacked a whole interval ago.
		default:
			behind = seq
		}
	}
}

// Run keeps the cache current until ctx is done or the watch fails.
func (c *Cache) Run(ctx context.Context) error {
	defer func() { _ = c.w.Stop() }() // Stopping an ended watcher can only fail harmlessly.
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-c.w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("apikey: key watcher closed")
			}
			if e == nil {
				if initial {
					initial = false
					close(c.ready)
				}
				continue
			}
			c.apply(e)
		}
	}
}

func (c *Cache) apply(e jetstream.KeyValueEntry) {
	if r := e.Revision(); r > c.rev.Load() {
		c.rev.Store(r) // Only Run's goroutine writes it.
	}
	id, isKey := strings.CutPrefix(e.Key(), "key.")
	if !isKey {
		return // The MAC secret.
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var k Key
	if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &k) != nil || k.ID != id {
		delete(c.keys, id) // Deleted, purged, or unreadable: a key nobody can use.
		return
	}
	c.keys[id] = k
}

// Ready is closed once the cache holds the bucket's initial contents.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Len is the number of key records, revoked ones included.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.keys)
}

// Authenticate returns the key whose secret this is, if it is in force at
// now; the error is one of ErrMissing, ErrMalformed, ErrUnknown, ErrExpired
// and ErrRevoked.
func (c *Cache) Authenticate(secret string, now time.Time) (Key, error) {
	if secret == "" {
		return Key{}, ErrMissing
	}
	if c.stale.Load() {
		return Key{}, ErrStale
	}
	id, err := ParseID(secret)
	if err != nil {
		return Key{}, err
	}
	c.mu.RLock()
	k, ok := c.keys[id]
	c.mu.RUnlock()
	if !ok {
		return Key{}, ErrUnknown
	}
	if err := k.Check(secret, now); err != nil {
		return Key{}, err
	}
	return k, nil
}

// Get returns the record of key id, if the cache has it.
func (c *Cache) Get(id string) (Key, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.keys[id]
	return k, ok
}
