package apikey

import (
	"errors"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestGuardRefusesKeysWhenTheWatchIsStuck: a cache whose watch stopped
// delivering refuses every key once the bucket moves on, and a healthy
// one never does.
func TestGuardRefusesKeysWhenTheWatchIsStuck(t *testing.T) {
	b := natstest.Start(t)
	q, err := queue.SetupConn(t.Context(), natstest.Connect(t, b), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := q.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	store := NewStore(kv)
	_, secret, err := store.Create(t.Context(), Key{Name: "a", Tenant: "acme", Role: User}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	start := func() *Cache {
		c, err := Watch(t.Context(), kv)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = c.Run(t.Context()) }()
		<-c.Ready()
		go c.Guard(t.Context(), kv, 20*time.Millisecond)
		return c
	}
	healthy, stuck := start(), start()
	_ = stuck.w.Stop() // As if nats.go could not re-create the watch.
	for _, c := range []*Cache{healthy, stuck} {
		if _, err := c.Authenticate(secret, time.Now()); err != nil {
			t.Fatalf("before the bucket moved on: %v", err)
		}
	}
	if _, _, err := store.Create(t.Context(), Key{Name: "b", Tenant: "acme", Role: User}, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := stuck.Authenticate(secret, time.Now())
		if errors.Is(err, ErrStale) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stuck watch behind the bucket: Authenticate = %v, want ErrStale", err)
		}
		time.Sleep(10 * time.Millisecond) // Polling with a deadline.
	}
	// The healthy cache has seen the new key: several guard rounds later it
	// still accepts keys.
	for range 10 {
		if _, err := healthy.Authenticate(secret, time.Now()); err != nil {
			t.Fatalf("a healthy watch: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // Spanning guard rounds.
	}
}
