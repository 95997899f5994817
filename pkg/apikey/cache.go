package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
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
}

// Watch starts watching the bucket's key records. Run applies the updates.
func Watch(ctx context.Context, kv jetstream.KeyValue) (*Cache, error) {
	w, err := kv.Watch(ctx, "key.*")
	if err != nil {
		return nil, fmt.Errorf("apikey: watch keys: %w", err)
	}
	return &Cache{w: w, keys: map[string]Key{}, ready: make(chan struct{})}, nil
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
	id := strings.TrimPrefix(e.Key(), "key.")
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
