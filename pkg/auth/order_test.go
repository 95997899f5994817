package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// TestWorkerBeforeDispatcher starts a worker with worker credentials on a
// server where no dispatcher has applied streams/ yet: it may not create
// streams, so it must wait for them, without a permission violation, and
// serve once a dispatcher applied them.
func TestWorkerBeforeDispatcher(t *testing.T) {
	d := deploy(t)
	var v violations
	opts := func(name string) []nats.Option {
		c, err := auth.ReadCreds(d.creds[name])
		if err != nil {
			t.Fatal(err)
		}
		return append(c.Options(), v.option(name))
	}
	sc := ollamasim.DefaultConfig()
	sc.TokensPerSecond, sc.TimeToFirstToken = 2000, time.Millisecond
	sim := httptest.NewServer(ollamasim.New(sc))
	t.Cleanup(sim.Close)
	simURL, _ := url.Parse(sim.URL) // httptest URLs always parse.

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })

	wcfg := worker.DefaultConfig("gpu1", simURL)
	wcfg.NATSURL, wcfg.NATSOptions, wcfg.Listen, wcfg.Logger = d.b.ClientURL(), opts("gpu1"), "", fleettest.Logger()
	wcfg.Queue.BindOnly = true // As cmd/worker sets it for worker credentials.
	wcfg.Heartbeat, wcfg.Poll, wcfg.UnservedScan = 500*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	wg.Go(func() {
		if err := worker.Run(ctx, wcfg); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	// It looks for the streams a few times before any dispatcher exists.
	pollUntil(t, 30*time.Second, "the worker to look for the streams three times", func() bool {
		cz, err := d.b.Server().Connz(&server.ConnzOptions{})
		if err != nil {
			return false
		}
		for _, c := range cz.Conns {
			if c.Name == "ollamamax-worker-gpu1" && c.InMsgs >= 3 {
				return true
			}
		}
		return false
	})
	dcfg := dispatcher.DefaultConfig(filepath.Join(t.TempDir(), "unused"))
	dcfg.HTTPAddr, dcfg.NATSURL, dcfg.ID = natstest.FreeAddr(t), d.b.ClientURL(), auth.DispatcherUser
	dcfg.NATSOptions, dcfg.Logger = opts(auth.DispatcherUser), fleettest.Logger()
	wg.Go(func() {
		if err := dispatcher.Run(ctx, dcfg); err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	base := "http://" + dcfg.HTTPAddr
	pollUntil(t, 30*time.Second, "the worker's model listed by the dispatcher", func() bool {
		code, body, err := post(base+"/api/tags", "")
		return err == nil && code == http.StatusOK && strings.Contains(body, "llama3.2:latest")
	})
	stop()
	wg.Wait()
	for _, s := range v.list() {
		t.Errorf("permission violation: %s", s)
	}
}
