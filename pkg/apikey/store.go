package apikey

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// ErrNotFound is returned for a key ID the bucket does not hold.
var ErrNotFound = errors.New("apikey: no such key")

// entry is the bucket key of a key record.
func entry(id string) string { return "key." + id }

// Store manages the key records of a bucket.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore returns a store over the ollamaq_keys bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Create stores a new key made from k by New and returns it with its secret.
func (s *Store) Create(ctx context.Context, k Key, now time.Time) (Key, string, error) {
	k.Created = now
	k, secret := New(k)
	if err := k.Validate(); err != nil {
		return Key{}, "", err
	}
	b, err := json.Marshal(k)
	if err != nil {
		return Key{}, "", fmt.Errorf("apikey: encode %s: %w", k.ID, err)
	}
	if _, err := s.kv.Create(ctx, entry(k.ID), b); err != nil {
		return Key{}, "", fmt.Errorf("apikey: store %s: %w", k.ID, err)
	}
	return k, secret, nil
}

// Get returns the record of key id.
func (s *Store) Get(ctx context.Context, id string) (Key, uint64, error) {
	if !job.ValidToken(id) {
		return Key{}, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	e, err := s.kv.Get(ctx, entry(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Key{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Key{}, 0, fmt.Errorf("apikey: get %s: %w", id, err)
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return Key{}, 0, fmt.Errorf("apikey: decode %s: %w", id, err)
	}
	return k, e.Revision(), nil
}

// List returns every key, revoked ones too, sorted by tenant, then name.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "key.*")
	if err != nil {
		return nil, fmt.Errorf("apikey: list: %w", err)
	}
	var ids []string
	for name := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(name, "key."))
	}
	keys := make([]Key, 0, len(ids))
	for _, id := range ids {
		k, _, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // Gone since it was listed.
		}
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		return cmp.Or(strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return keys, nil
}

// update applies change to key id with optimistic concurrency: a concurrent
// change makes it read the record again.
func (s *Store) update(ctx context.Context, id string, change func(*Key) error) (Key, error) {
	for {
		k, rev, err := s.Get(ctx, id)
		if err != nil {
			return Key{}, err
		}
		if err := change(&k); err != nil {
			return Key{}, err
		}
		b, err := json.Marshal(k)
		if err != nil {
			return Key{}, fmt.Errorf("apikey: encode %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, entry(id), b, rev)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue
		}
		if err != nil {
			return Key{}, fmt.Errorf("apikey: update %s: %w", id, err)
		}
		return k, nil
	}
}

// Revoke marks key id revoked at now: every dispatcher refuses it from the
// moment its watch sees the change. The record stays, for the audit trail.
func (s *Store) Revoke(ctx context.Context, id string, now time.Time) (Key, error) {
	return s.update(ctx, id, func(k *Key) error {
		if k.Revoked.IsZero() {
			k.Revoked = now
		}
		return nil
	})
}

// Rotate gives key id a new secret, returned; the old secret stops working.
// A revoked key cannot be rotated.
func (s *Store) Rotate(ctx context.Context, id string, now time.Time) (Key, string, error) {
	var secret string
	k, err := s.update(ctx, id, func(k *Key) error {
		if !k.Revoked.IsZero() {
			return fmt.Errorf("apikey: key %s is revoked; create a new one", k.ID)
		}
		*k, secret = k.Rotate(now)
		return nil
	})
	return k, secret, err
}

// MACSecret returns the dispatchers' shared MAC secret, creating it if the
// bucket has none yet. Two dispatchers racing to create it agree on the
// one stored first.
func MACSecret(ctx context.Context, kv jetstream.KeyValue) ([]byte, error) {
	for {
		e, err := kv.Get(ctx, job.KeyMACEntry)
		if err == nil {
			if len(e.Value()) < 32 {
				return nil, fmt.Errorf("apikey: the MAC secret in %s is too short (%d bytes)", job.KeyBucket, len(e.Value()))
			}
			return e.Value(), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("apikey: get MAC secret: %w", err)
		}
		b := make([]byte, 32)
		_, _ = rand.Read(b) // crypto/rand.Read never returns an error (Go 1.24+).
		if _, err := kv.Create(ctx, job.KeyMACEntry, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("apikey: create MAC secret: %w", err)
		}
	}
}
