package auth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// violations collects the permission violations the server reports to
// each connection of the test.
type violations struct {
	mu   sync.Mutex
	seen []string
}

// option records the violations of the connection of who.
func (v *violations) option(who string) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.seen = append(v.seen, who+": "+err.Error())
		}
	})
}

func (v *violations) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.seen...)
}

// TestFleetWithRoles runs a real dispatcher and worker (their Run, as the
// commands do) with credentials of their roles against an operator-mode
// server, a NATS-native client with a client's and a batch with an
// admin's: everything each does in ordinary work must be within its role,
// without a single permission violation.
func TestFleetWithRoles(t *testing.T) {
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

	dcfg := dispatcher.DefaultConfig(filepath.Join(t.TempDir(), "unused"))
	dcfg.HTTPAddr, dcfg.NATSURL, dcfg.ID = natstest.FreeAddr(t), d.b.ClientURL(), auth.DispatcherUser
	dcfg.NATSOptions, dcfg.Logger = opts(auth.DispatcherUser), fleettest.Logger()
	dcfg.Reload = make(chan struct{}) // As cmd/dispatcher: it watches the dispatchers' shared settings.
	wg.Go(func() {
		if err := dispatcher.Run(ctx, dcfg); err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	base := "http://" + dcfg.HTTPAddr
	// The dispatcher applies streams/ before it serves; a worker may not
	// create streams, so it starts after, as in a deployment.
	pollUntil(t, 30*time.Second, "the dispatcher serving", func() bool {
		code, _, err := post(base+"/api/version", "")
		return err == nil && code == http.StatusOK
	})
	wcfg := worker.DefaultConfig("gpu1", simURL)
	wcfg.NATSURL, wcfg.NATSOptions, wcfg.Listen, wcfg.Logger = d.b.ClientURL(), opts("gpu1"), "", fleettest.Logger()
	wcfg.Heartbeat, wcfg.Poll, wcfg.UnservedScan = 500*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	wcfg.Reload = make(chan struct{}) // As cmd/worker: it watches the workers' shared settings.
	wg.Go(func() {
		if err := worker.Run(ctx, wcfg); err != nil {
			t.Errorf("worker: %v", err)
		}
	})

	pollUntil(t, 30*time.Second, "the worker's model listed by the dispatcher", func() bool {
		code, body, err := post(base+"/api/tags", "")
		return err == nil && code == http.StatusOK && strings.Contains(body, "llama3.2:latest")
	})

	t.Run("HTTP generate through the queue", func(t *testing.T) {
		code, body, err := post(base+"/api/generate", `{"model":"llama3.2","prompt":"hi"}`)
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"done":true`) {
			t.Errorf("generate: %d %v\n%s", code, err, body)
		}
	})
	t.Run("node command", func(t *testing.T) {
		code, body, err := post(base+"/api/show", `{"model":"llama3.2"}`)
		if err != nil || code != http.StatusOK {
			t.Errorf("show: %d %v\n%s", code, err, body)
		}
	})
	t.Run("NATS-native client", func(t *testing.T) {
		nc, err := nats.Connect(d.b.ClientURL(), opts("alice")...)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		q, err := queue.Open(t.Context(), js)
		if err != nil {
			t.Fatal(err)
		}
		req, err := queue.NewRequester(nc, q, "alice")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = req.Close() }()
		for _, tt := range []struct{ model, want string }{
			{"llama3.2:latest", "done"},
			{"mistral:latest", "error 404"}, // No worker has it: a worker answers and removes it.
		} {
			body := fmt.Sprintf(`{"model":%q,"prompt":"hi"}`, tt.model)
			st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: tt.model, Class: job.Interactive,
				Route: "/api/generate", Body: []byte(body), Wait: time.Minute})
			if err != nil {
				t.Fatalf("submit %s: %v", tt.model, err)
			}
			got := ""
			err = st.Follow(t.Context(), 30*time.Second, 0, func(r job.Reply) bool {
				switch r.Kind {
				case job.KindDone:
					got = "done"
				case job.KindError:
					got = fmt.Sprintf("error %d", r.Status)
				default:
					return true
				}
				return false
			})
			st.Close()
			if err != nil || got != tt.want {
				t.Errorf("%s: %q, %v; want %s", tt.model, got, err, tt.want)
			}
		}
	})

	t.Run("batch as the admin", func(t *testing.T) {
		nc, err := nats.Connect(d.b.ClientURL(), opts("root")...)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		q, err := queue.Open(t.Context(), js)
		if err != nil {
			t.Fatal(err)
		}
		c, err := batch.Open(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		lines := []byte(`{"custom_id":"a","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"one"}}` + "\n" +
			`{"custom_id":"b","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"two"}}` + "\n")
		sub, err := c.Submit(t.Context(), func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(lines)), nil }, batch.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		st, err := c.Watch(ctx, sub.Record.ID, 50*time.Millisecond, func(batch.Status) {})
		if err != nil || st.State != batch.Done || st.Done != 2 {
			t.Errorf("batch: %+v, %v; want both lines done", st, err)
		}
	})
	t.Run("dispatcher metrics", func(t *testing.T) {
		code, body, err := post(base+"/metrics", "")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "ollamamax_queue_up 1") {
			t.Errorf("metrics: %d %v; want ollamamax_queue_up 1", code, err)
		}
	})

	stop()
	wg.Wait()
	for _, s := range v.list() {
		t.Errorf("permission violation: %s", s)
	}
}

func post(u, body string) (int, string, error) {
	method := http.MethodPost
	if body == "" {
		method = http.MethodGet
	}
	r, err := http.NewRequest(method, u, bytes.NewBufferString(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
