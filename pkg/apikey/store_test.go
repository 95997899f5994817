package apikey_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// bucket returns the key bucket of a fresh deployment.
func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	b := natstest.Start(t)
	q, err := queue.SetupConn(t.Context(), natstest.Connect(t, b), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := q.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestStoreAndCache creates, rotates and revokes keys through a Store and
// checks what a Cache watching the same bucket lets in at each step.
func TestStoreAndCache(t *testing.T) {
	kv := bucket(t)
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := apikey.NewStore(kv)

	cctx, cancel := context.WithCancel(ctx)
	c, err := apikey.Watch(cctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cache: %v", err)
		}
	})
	<-c.Ready()
	// authenticates polls the cache until secret gets want: the watch
	// delivers changes asynchronously.
	authenticates := func(what, secret string, want error) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := c.Authenticate(secret, now)
			if errors.Is(err, want) || err == nil && want == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Authenticate = %v, want %v", what, err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	k, secret, err := s.Create(ctx, apikey.Key{Name: "ci", Tenant: "acme", Role: apikey.User, Models: []string{"llama3*"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Created.Equal(now) || k.Hash == "" {
		t.Errorf("created %+v", k)
	}
	other, _, err := s.Create(ctx, apikey.Key{Name: "batch", Tenant: "acme", Role: apikey.Admin}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, apikey.Key{Name: "bad", Tenant: "a.b", Role: apikey.User}, now); err == nil ||
		!strings.Contains(err.Error(), "tenant") {
		t.Errorf("Create with a bad tenant = %v", err)
	}
	authenticates("new key", secret, nil)
	if got, ok := c.Get(k.ID); !ok || got.Tenant != "acme" {
		t.Errorf("cache has %+v, %v", got, ok)
	}
	authenticates("garbage", "omx_nonsense", apikey.ErrMalformed)
	authenticates("nothing", "", apikey.ErrMissing)
	unknown, _ := apikey.New(apikey.Key{})
	_, unknownSecret := unknown.Rotate(now)
	authenticates("a key of no bucket", unknownSecret, apikey.ErrUnknown)

	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != other.ID || list[1].ID != k.ID {
		t.Fatalf("List = %+v, %v; want batch, then ci", list, err)
	}

	rotated, newSecret, err := s.Rotate(ctx, k.ID, now.Add(time.Minute))
	if err != nil || newSecret == secret || rotated.Hash == k.Hash {
		t.Fatalf("Rotate = %+v, %v", rotated, err)
	}
	authenticates("new secret after rotate", newSecret, nil)
	authenticates("old secret after rotate", secret, apikey.ErrUnknown)

	revoked, err := s.Revoke(ctx, k.ID, now.Add(2*time.Minute))
	if err != nil || !revoked.Revoked.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("Revoke = %+v, %v", revoked, err)
	}
	authenticates("revoked", newSecret, apikey.ErrRevoked)
	// Revoking again keeps the first revocation; a revoked key stays revoked.
	if again, err := s.Revoke(ctx, k.ID, now.Add(time.Hour)); err != nil || !again.Revoked.Equal(revoked.Revoked) {
		t.Errorf("Revoke again = %+v, %v", again, err)
	}
	if _, _, err := s.Rotate(ctx, k.ID, now); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Errorf("Rotate of a revoked key = %v", err)
	}
	for _, id := range []string{"nosuchkey123", "a.b", ""} {
		if _, _, err := s.Get(ctx, id); !errors.Is(err, apikey.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.Revoke(ctx, "nosuchkey123", now); !errors.Is(err, apikey.ErrNotFound) {
		t.Errorf("Revoke of no key = %v, want ErrNotFound", err)
	}
	if c.Len() != 2 {
		t.Errorf("cache holds %d keys, want 2 (revoked ones too)", c.Len())
	}
}

func TestMACSecret(t *testing.T) {
	kv := bucket(t)
	a, err := apikey.MACSecret(t.Context(), kv)
	if err != nil || len(a) < 32 {
		t.Fatalf("MACSecret = %x, %v", a, err)
	}
	b, err := apikey.MACSecret(t.Context(), kv)
	if err != nil || string(a) != string(b) {
		t.Errorf("second MACSecret = %x, %v; want the first, %x", b, err, a)
	}
}
