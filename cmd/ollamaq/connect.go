package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// connFlags are how ollamaq finds and authenticates to NATS: flags, their
// environment variables, and the nats CLI's saved contexts.
type connFlags struct {
	server, context, creds, nkey, user, password, token string
	cert, key, ca                                       string
	timeout                                             time.Duration
}

// connFlagNames are the flags register defines; commands leave them out of
// their own help.
var connFlagNames = map[string]bool{"server": true, "context": true, "creds": true, "nkey": true, "user": true,
	"password": true, "token": true, "tlscert": true, "tlskey": true, "tlsca": true, "timeout": true}

// register defines the connection flags on fs. With getenv, their defaults
// come from the environment; without, from the values already parsed (a
// command's flag set after the global one).
func (c *connFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	if getenv != nil {
		c.server, c.context, c.creds, c.nkey = getenv("NATS_URL"), getenv("NATS_CONTEXT"), getenv("NATS_CREDS"), getenv("NATS_NKEY")
		c.user, c.password, c.token = getenv("NATS_USER"), getenv("NATS_PASSWORD"), getenv("NATS_TOKEN")
		c.cert, c.key, c.ca = getenv("NATS_CERT"), getenv("NATS_KEY"), getenv("NATS_CA")
		c.timeout = 5 * time.Second
		if d, err := time.ParseDuration(getenv("NATS_TIMEOUT")); err == nil && d > 0 {
			c.timeout = d
		}
	}
	fs.StringVar(&c.server, "server", c.server, "NATS server URL(s), comma-separated")
	fs.StringVar(&c.context, "context", c.context, "nats CLI context to use")
	fs.StringVar(&c.creds, "creds", c.creds, "user credentials `file`")
	fs.StringVar(&c.nkey, "nkey", c.nkey, "user NKey seed `file`")
	fs.StringVar(&c.user, "user", c.user, "user name")
	fs.StringVar(&c.password, "password", c.password, "password")
	fs.StringVar(&c.token, "token", c.token, "authentication token")
	fs.StringVar(&c.cert, "tlscert", c.cert, "TLS client certificate `file`")
	fs.StringVar(&c.key, "tlskey", c.key, "TLS client key `file`")
	fs.StringVar(&c.ca, "tlsca", c.ca, "TLS certificate authority `file`")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "connect and request timeout")
}

// natsContext is a saved nats CLI context (~/.config/nats/context/NAME.json):
// the fields ollamaq uses.
type natsContext struct {
	URL         string `json:"url"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Token       string `json:"token"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	TLSFirst    bool   `json:"tls_first"`
	InboxPrefix string `json:"inbox_prefix"`
	JSDomain    string `json:"jetstream_domain"`

	// user is the name in the credentials options found, if any: the
	// requester token their permissions are bound to.
	user string
}

// connectError is a failure to reach or use NATS: exit code 3.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func connFailed(format string, a ...any) error { return &connectError{fmt.Errorf(format, a...)} }

// loadContext reads the nats context named name; with no name, the one
// the nats CLI has selected, if any. It returns nil when none applies.
func loadContext(name string, getenv func(string) string) (*natsContext, error) {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir() // Without a home there are no contexts; "" then finds none.
		}
		dir = filepath.Join(home, ".config")
	}
	dir = filepath.Join(dir, "nats")
	if name == "" {
		b, err := os.ReadFile(filepath.Join(dir, "context.txt"))
		if err != nil {
			return nil, nil // The nats CLI has no context selected.
		}
		if name = strings.TrimSpace(string(b)); name == "" {
			return nil, nil
		}
	}
	path := name
	if !strings.ContainsRune(name, os.PathSeparator) && !strings.HasSuffix(name, ".json") {
		path = filepath.Join(dir, "context", name+".json")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, connFailed("nats context %q does not exist (looked for %s)", name, path)
	}
	if err != nil {
		return nil, connFailed("read nats context %q: %v", name, err)
	}
	var c natsContext
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, connFailed("nats context %q (%s) is not valid JSON: %v", name, path, err)
	}
	for _, p := range []*string{&c.Creds, &c.NKey, &c.Cert, &c.Key, &c.CA} {
		*p = expandPath(*p, getenv)
	}
	return &c, nil
}

// expandPath expands $VARS and a leading ~ as the nats CLI does.
func expandPath(p string, getenv func(string) string) string {
	p = os.Expand(p, getenv)
	if rest, ok := strings.CutPrefix(p, "~"); ok {
		p = getenv("HOME") + rest
	}
	return p
}

// options merges flags and environment over the context and returns the URL
// and the nats options to connect with. With credentials issued by a role's
// signing key (ollamaq auth add), the connection uses the inbox prefix that
// role may read, _INBOX_<name>, unless the context sets one.
func (c *connFlags) options(getenv func(string) string) (string, []nats.Option, *natsContext, error) {
	nctx, err := loadContext(c.context, getenv)
	if err != nil {
		return "", nil, nil, err
	}
	if nctx == nil {
		nctx = &natsContext{}
	}
	pick := func(flag, ctx string) string {
		if flag != "" {
			return flag
		}
		return ctx
	}
	url := pick(c.server, pick(nctx.URL, nats.DefaultURL))
	opts := []nats.Option{nats.Name("ollamaq"), nats.Timeout(c.timeout), nats.MaxReconnects(3),
		// ollamaq says what went wrong itself, in one sentence: the call that
		// failed returns why, and connect asks LastError. nats.go's default
		// handler would print a second, raw line to the process's stderr.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
	if creds := pick(c.creds, nctx.Creds); creds != "" {
		if _, err := os.Stat(creds); err != nil {
			return "", nil, nil, connFailed("credentials file %s cannot be read: %v", creds, pathError(err))
		}
		cr, err := auth.ReadCreds(creds)
		if err != nil {
			return "", nil, nil, connFailed("credentials file %s cannot be used: %v", creds, pathError(errors.Unwrap(err)))
		}
		opts = append(opts, nats.UserCredentials(creds))
		if p := cr.InboxPrefix(); p != "" && nctx.InboxPrefix == "" {
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
		nctx.user = cr.Name
	}
	if seed := pick(c.nkey, nctx.NKey); seed != "" {
		o, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return "", nil, nil, connFailed("NKey seed %s cannot be used: %v", seed, pathError(err))
		}
		opts = append(opts, o)
	}
	if user := pick(c.user, nctx.User); user != "" {
		opts = append(opts, nats.UserInfo(user, pick(c.password, nctx.Password)))
	}
	if token := pick(c.token, nctx.Token); token != "" {
		opts = append(opts, nats.Token(token))
	}
	cert, key := pick(c.cert, nctx.Cert), pick(c.key, nctx.Key)
	switch {
	case cert != "" && key != "":
		for _, f := range []string{cert, key} {
			if _, err := os.Stat(f); err != nil {
				return "", nil, nil, connFailed("TLS file %s cannot be read: %v", f, pathError(err))
			}
		}
		opts = append(opts, nats.ClientCert(cert, key))
	case cert != "" || key != "":
		return "", nil, nil, connFailed("a TLS client certificate needs both --tlscert and --tlskey")
	}
	if ca := pick(c.ca, nctx.CA); ca != "" {
		if _, err := os.Stat(ca); err != nil {
			return "", nil, nil, connFailed("TLS file %s cannot be read: %v", ca, pathError(err))
		}
		opts = append(opts, nats.RootCAs(ca))
	}
	if nctx.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if nctx.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(nctx.InboxPrefix))
	}
	return url, opts, nctx, nil
}

// pathError drops the path an *os.PathError repeats.
func pathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// connect opens the NATS connection and binds the queue. Its errors are
// *connectError, one sentence each.
func (e *env) connect(ctx context.Context) (*nats.Conn, *queue.Queue, error) {
	url, opts, nctx, err := e.conn.options(e.getenv)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		switch {
		case refused(err):
			return nil, nil, connFailed("NATS at %s refused the credentials (%v)", url, err)
		case errors.Is(err, nats.ErrNoServers):
			return nil, nil, connFailed("cannot reach NATS at %s (is the server running, and is that its address?)", url)
		}
		return nil, nil, connFailed("cannot connect to NATS at %s: %v", url, err)
	}
	var js jetstream.JetStream
	if nctx.JSDomain != "" {
		js, err = jetstream.NewWithDomain(nc, nctx.JSDomain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		nc.Close()
		return nil, nil, connFailed("jetstream: %v", err)
	}
	octx, cancel := context.WithTimeout(ctx, e.conn.timeout)
	defer cancel()
	q, err := queue.Open(octx, js)
	if err != nil {
		// A request the user may not publish gets no answer: the reason is
		// the connection's last error, which the server sent on the side.
		last := nc.LastError()
		nc.Close()
		switch {
		case errors.Is(last, nats.ErrPermissionViolation):
			return nil, nil, connFailed("NATS at %s does not permit these credentials what ollamaq needs (%v)", url, last)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			return nil, nil, connFailed("NATS at %s does not answer JetStream requests (is JetStream enabled for this account?)", url)
		}
		return nil, nil, connFailed("%v", err)
	}
	e.user = nctx.user
	return nc, q, nil
}

// refused reports whether err is the server refusing the credentials. At
// connect the server says "Authorization Violation" for credentials it does
// not accept, expired and revoked users included; the other sentinels are
// for what it says to connections it already accepted.
func refused(err error) bool {
	for _, target := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// connectFailed prints a connect error and returns its exit code.
func (e *env) connectFailed(err error) int {
	return e.fail(exitConnect, "%v", err)
}

// queueFunc is a command's work on the queue, once connected.
type queueFunc func(ctx context.Context, e *env, q *queue.Queue) int

// withQueue connects to the queue, does work and closes the connection. It
// returns work's exit code, or exitConnect when it cannot connect.
func (e *env) withQueue(ctx context.Context, work queueFunc) int {
	nc, q, err := e.connect(ctx)
	if err != nil {
		return e.connectFailed(err)
	}
	defer nc.Close()
	return work(ctx, e, q)
}
