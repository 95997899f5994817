package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// wait bounds every wait for a message that should arrive.
const wait = 5 * time.Second

// deployment is a real nats-server in operator mode with the users of an
// auth directory.
type deployment struct {
	t     *testing.T
	dir   *auth.Dir
	cfg   broker.Config
	b     *broker.Broker
	creds map[string]string // user name -> credentials file
	admin *nats.Conn
}

// users issues the users the tests act as, besides the dispatcher and sys
// users auth init makes.
var users = []struct {
	name string
	opts auth.UserOptions
}{
	{"alice", auth.UserOptions{Role: auth.Client}},
	{"bob", auth.UserOptions{Role: auth.Client}},
	{"carol", auth.UserOptions{Role: auth.Client, BatchOnly: true}},
	{"dave", auth.UserOptions{Role: auth.Client, Models: []string{"llama3.2", "qwen2.5:0.5b"}}},
	{"erin", auth.UserOptions{Role: auth.Client, Lanes: []job.Class{job.Async, job.Batch}}},
	{"gpu1", auth.UserOptions{Role: auth.Worker}},
	{"gpu2", auth.UserOptions{Role: auth.Worker}},
	{"root", auth.UserOptions{Role: auth.Admin}},
}

// deploy makes an auth directory with users and starts a server on it.
func deploy(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{t: t, creds: map[string]string{}}
	var err error
	if d.dir, err = auth.Init(filepath.Join(t.TempDir(), "auth")); err != nil {
		t.Fatalf("Init: %v", err)
	}
	d.creds[auth.DispatcherUser] = d.dir.CredsPath(auth.DispatcherUser)
	d.creds[auth.SysUser] = d.dir.CredsPath(auth.SysUser)
	for _, u := range users {
		o := u.opts
		o.CredsFile = d.dir.CredsPath(u.name)
		if _, _, err := d.dir.AddUser(u.name, o); err != nil {
			t.Fatalf("AddUser %s: %v", u.name, err)
		}
		d.creds[u.name] = o.CredsFile
	}
	d.cfg = broker.DefaultConfig(t.TempDir())
	d.cfg.Listen = "127.0.0.1:-1" // Over TCP, as workers connect: the server's refusals arrive as sent.
	d.cfg.AuthDir = d.dir.Path()
	d.start()
	return d
}

// start starts the server on d.cfg, shut down when the test ends.
func (d *deployment) start() {
	d.t.Helper()
	d.b = natstest.StartWith(d.t, d.cfg)
	d.admin = d.connect("root")
}

// restart stops the server and starts it again on the same directories
// and address.
func (d *deployment) restart() {
	d.t.Helper()
	cfg := d.cfg
	d.cfg.Listen = strings.TrimPrefix(d.b.ClientURL(), "nats://")
	d.b.Shutdown()
	d.start()
	d.cfg = cfg
}

// dial connects as user name, without reconnecting: a connection the
// server closes stays closed.
func (d *deployment) dial(name string, opts ...nats.Option) (*nats.Conn, error) {
	c, err := auth.ReadCreds(d.creds[name])
	if err != nil {
		return nil, err
	}
	opts = append(append(c.Options(), nats.NoReconnect(), nats.Name(name),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})), opts...)
	return nats.Connect(d.b.ClientURL(), opts...)
}

// connect connects as user name, closed when the test ends.
func (d *deployment) connect(name string) *nats.Conn {
	d.t.Helper()
	nc, err := d.dial(name)
	if err != nil {
		d.t.Fatalf("connect as %s: %v", name, err)
	}
	d.t.Cleanup(nc.Close)
	return nc
}

// errRefused wraps what the server said when it refused an action.
var errRefused = errors.New("refused by the server")

// refused returns errRefused with the server's permission violation, if nc
// got one, else nil. Flush first: the server answers in order, so a
// violation it sent is in by the time the PONG is.
func refused(nc *nats.Conn) error {
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	return nil
}

// action does one thing as a user on its own connection nc. It returns nil
// when it was allowed and worked, an error wrapping errRefused when the
// server refused it, and any other error when it neither worked nor was
// refused.
type action func(d *deployment, nc *nats.Conn) error

// subscribe subscribes to subject; allowed, it must receive what the admin
// publishes on probe.
func subscribe(subject, probe string) action {
	return func(d *deployment, nc *nats.Conn) error {
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		if err := refused(nc); err != nil {
			return err
		}
		if err := d.admin.Publish(probe, []byte("probe")); err != nil {
			return err
		}
		if _, err := sub.NextMsg(wait); err != nil {
			return fmt.Errorf("subscribed to %s, but nothing arrived from %s: %w", subject, probe, err)
		}
		return nil
	}
}

// publish publishes on subject with core NATS; allowed, an admin
// subscribed to it must receive it.
func publish(subject string) action {
	return func(d *deployment, nc *nats.Conn) error {
		watch, err := d.admin.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer func() { _ = watch.Unsubscribe() }()
		if err := d.admin.Flush(); err != nil {
			return err
		}
		if err := nc.Publish(subject, []byte("x")); err != nil {
			return err
		}
		if err := refused(nc); err != nil {
			return err
		}
		if _, err := watch.NextMsg(wait); err != nil {
			return fmt.Errorf("published on %s, but nothing arrived: %w", subject, err)
		}
		return nil
	}
}

// request sends a request (a JetStream API call, a JetStream publish) with
// headers h and checks the answer with check; allowed, an answer must come.
func request(subject string, body string, h nats.Header, check func(*nats.Msg) error) action {
	return func(d *deployment, nc *nats.Conn) error {
		inbox := nc.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: subject, Reply: inbox, Data: []byte(body), Header: h}
		if err := nc.PublishMsg(m); err != nil {
			return err
		}
		if err := refused(nc); err != nil {
			return err
		}
		resp, err := sub.NextMsg(wait)
		if err != nil {
			return fmt.Errorf("no answer on %s: %w", subject, err)
		}
		if check != nil {
			return check(resp)
		}
		return nil
	}
}

// jsOK checks that a JetStream answer (API response or PubAck) is no error.
func jsOK(m *nats.Msg) error {
	var r struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("JetStream answer %q: %w", m.Data, err)
	}
	if r.Error != nil {
		return fmt.Errorf("JetStream error %d: %s", r.Error.Code, r.Error.Description)
	}
	return nil
}

// jsPublish stores a job-like message on subject through JetStream.
func jsPublish(subject string) action {
	h := nats.Header{job.HeaderJob: []string{job.NewID()}}
	return request(subject, `{"model":"llama3.2","prompt":"hi"}`, h, jsOK)
}

// outcome names what happened: "allowed", "refused" or the failure.
func outcome(err error) string {
	switch {
	case err == nil:
		return "allowed"
	case errors.Is(err, errRefused):
		return "refused"
	}
	return "failed: " + err.Error()
}

// pollUntil calls cond until it is true or the deadline passes.
func pollUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		<-tick.C
	}
}

// accountFile is where the auth directory keeps the OLLAMAMAX account JWT.
func accountFile(d *deployment) string {
	return filepath.Join(d.dir.Path(), "accounts", auth.AccountName+".jwt")
}

func readAccountJWT(d *deployment) ([]byte, error) { return os.ReadFile(accountFile(d)) }

func writeAccountJWT(d *deployment, b []byte) error { return os.WriteFile(accountFile(d), b, 0o600) }

// authPush pushes an account JWT as the sys user does.
func authPush(ctx context.Context, sys *nats.Conn, accountJWT string) error {
	return auth.PushAccount(ctx, sys, accountJWT)
}
