// Package broker runs the embedded nats-server with JetStream that a
// dispatcher starts when no NATS URL is configured, open on loopback or, with
// an auth directory, in operator mode.
//
// It imports nats-server, nats.go, the auth package and internal/tlsreload only.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// ErrListen is wrapped by Start when the server cannot listen for NATS
// clients on Config.Listen. The error also wraps the cause, so
// errors.Is(err, syscall.EADDRINUSE) tells that another process has the address.
var ErrListen = errors.New("broker: cannot listen for NATS clients")

// StoreDirInUseError is returned by Start when another server, in this
// process or another, runs on the same store directory. Two servers on one
// directory would corrupt each other's files; nats-server does not check.
type StoreDirInUseError struct {
	Dir string
	// PID is the process that holds the directory, as it wrote it in the lock
	// file; 0 when unknown.
	PID int
}

func (e *StoreDirInUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("broker: store directory %s is in use by another server", e.Dir)
	}
	return fmt.Sprintf("broker: store directory %s is in use by another server (pid %d)", e.Dir, e.PID)
}

// Config configures the embedded server.
type Config struct {
	// Listen is the host:port for NATS clients (workers on other machines).
	// Loopback by default; "" disables the listener (in-process clients only).
	Listen string
	// StoreDir is where JetStream keeps its files. The server holds a lock on
	// it while it runs.
	StoreDir string
	// MaxPayload is the largest message the server accepts, in bytes.
	MaxPayload int32
	// SyncAlways makes JetStream fsync every write: slower, but no acknowledged
	// job is lost in an OS crash. The default syncs every two minutes.
	SyncAlways bool
	// AuthDir, if set, is an auth directory (ollamaq auth init, or an nsc
	// operator's JWTs laid out as auth.LoadTrust reads them). The server then
	// runs in operator mode: it trusts the directory's operator, and resolves
	// accounts with a full directory resolver kept in StoreDir/resolver,
	// seeded at each start with the directory's account JWTs where they are
	// newer. Account JWTs pushed while it runs (revocations) are kept there,
	// across restarts. Every client, the in-process ones too, then needs
	// credentials.
	AuthDir string
	// TLS, if enabled, makes the client listener require TLS with this
	// certificate (Broker.ReloadTLS reads it again), and with TLS.CA, client
	// certificates. In-process connections need no TLS.
	TLS TLSConfig
	// Logger receives the server's log; nil discards it. The server's notices
	// (its start-up banner) are logged at debug level.
	Logger *slog.Logger
}

// resolverDir is where, under the store directory, the account resolver of
// an operator-mode server keeps the account JWTs.
const resolverDir = "resolver"

// DefaultConfig returns a loopback-only configuration storing under dir.
func DefaultConfig(dir string) Config {
	return Config{Listen: "127.0.0.1:4222", StoreDir: dir, MaxPayload: 8 << 20}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.StoreDir == "" {
		return errors.New("broker: StoreDir is required")
	}
	if c.Listen != "" {
		if _, _, err := splitHostPort(c.Listen); err != nil {
			return fmt.Errorf("broker: Listen: %w", err)
		}
	}
	if c.MaxPayload <= 0 {
		return errors.New("broker: MaxPayload must be positive")
	}
	return c.TLS.Validate()
}

// IsLoopback reports whether addr (host:port) only accepts local connections.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// Broker is a running embedded server.
type Broker struct {
	s      *server.Server
	tls    *tlsReloader // nil without TLS.
	unlock func()
	once   sync.Once
}

// Start starts the server and returns once it accepts connections. It fails,
// with nothing left running or listening, when the store directory is in use
// (*StoreDirInUseError), when the server cannot listen on cfg.Listen
// (ErrListen), or when JetStream cannot start.
func Start(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	unlock, err := lockStoreDir(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "ollamamax",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, _ := splitHostPort(cfg.Listen) // Validated above.
		opts.Host, opts.Port = host, port
	}
	var reloader *tlsReloader
	if cfg.TLS.Enabled() {
		reloader, opts.TLSConfig, err = newTLSReloader(cfg.TLS)
		if err != nil {
			unlock()
			return nil, err
		}
		opts.TLS, opts.TLSVerify = true, cfg.TLS.CA != ""
	}
	if cfg.AuthDir != "" {
		if err := operatorMode(opts, cfg); err != nil {
			unlock()
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		if opts.AccountResolver != nil {
			opts.AccountResolver.Close()
		}
		unlock()
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logs := &logAdapter{l: logger, starting: true}
	s.SetLoggerV2(logs, false, false, false)
	b := &Broker{s: s, tls: reloader, unlock: unlock}
	// Start does not block: it returns once JetStream is up and the client
	// listener is bound, or after either failed. nats-server reports such a
	// failure only to its logger (Fatalf, which here does not exit) and
	// carries on without JetStream or a listener.
	s.Start()
	if err := startError(s, opts, cfg, logs.started()); err != nil {
		b.Shutdown()
		return nil, err
	}
	return b, nil
}

// operatorMode makes opts trust the operator of the auth directory, with a
// full directory resolver under the store directory that holds the
// directory's account JWTs.
func operatorMode(opts *server.Options, cfg Config) error {
	// A directory with the operator's keys (ollamaq auth init) is brought up
	// to this version's role templates first; one of JWTs only (nsc) is
	// its owner's to keep current.
	if d, err := auth.Open(cfg.AuthDir); err == nil {
		accountJWT, err := d.Upgrade()
		if err != nil {
			return fmt.Errorf("start nats-server in operator mode: upgrade the role templates: %w", err)
		}
		if accountJWT != "" && cfg.Logger != nil {
			cfg.Logger.Info("upgraded the role permissions of the auth directory to this version", "dir", cfg.AuthDir)
		}
	}
	trust, err := auth.LoadTrust(cfg.AuthDir)
	if err != nil {
		return fmt.Errorf("start nats-server in operator mode: %w", err)
	}
	dir := filepath.Join(cfg.StoreDir, resolverDir)
	res, err := server.NewDirAccResolver(dir, 0, 0, server.NoDelete)
	if err != nil {
		return fmt.Errorf("start nats-server in operator mode: account resolver in %s: %w", dir, err)
	}
	for _, a := range trust.Accounts {
		if err := seed(res, a); err != nil {
			res.Close()
			return fmt.Errorf("start nats-server in operator mode: account %s: %w", a.Name, err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{trust.Operator}
	opts.AccountResolver = res
	opts.SystemAccount = trust.SystemAccount
	return nil
}

// seed stores the account JWT a in the resolver unless it holds one issued
// as late or later: one pushed while the server ran (a revocation) must
// survive a restart even if the auth directory has an older one. The
// resolver itself would replace a JWT of the same second.
func seed(res *server.DirAccResolver, a auth.AccountJWT) error {
	have, err := res.LoadAcc(a.PublicKey)
	if err == nil && have != "" {
		held, herr := jwt.DecodeAccountClaims(have)
		given, gerr := jwt.DecodeAccountClaims(a.JWT)
		if herr == nil && gerr == nil && held.IssuedAt >= given.IssuedAt {
			return nil
		}
	}
	return res.Store(a.PublicKey, a.JWT)
}

// startError tells why a started server is not serving, or returns nil.
// fatal is the error of the first Fatalf call during Start: nats-server
// calls it when it cannot listen or start JetStream, and it means the
// server is not running as asked even though it carries on.
func startError(s *server.Server, opts *server.Options, cfg Config, fatal error) error {
	var op *net.OpError
	switch {
	case errors.As(fatal, &op) && op.Op == "listen":
		return fmt.Errorf("%w on %s: %w", ErrListen, cfg.Listen, fatal)
	case fatal != nil:
		return fmt.Errorf("start nats-server (store directory %s): %w", cfg.StoreDir, fatal)
	case !opts.DontListen && s.Addr() == nil:
		return fmt.Errorf("%w on %s: the server gave no reason", ErrListen, cfg.Listen)
	case !s.ReadyForConnections(10 * time.Second):
		return errors.New("start nats-server: not ready after 10s")
	}
	return nil
}

// ClientURL is the URL clients on other processes use, or "" without a listener.
func (b *Broker) ClientURL() string {
	if b.s.Addr() == nil {
		return ""
	}
	return b.s.ClientURL()
}

// Connect returns an in-process client connection: no TCP, no listener
// needed. In operator mode (Config.AuthDir) opts must carry credentials.
func (b *Broker) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(b.s)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process: %w", err)
	}
	return nc, nil
}

// Server returns the underlying server, for health checks and tests.
func (b *Broker) Server() *server.Server { return b.s }

// Shutdown stops the server, waits for it, and releases the store directory.
// It is idempotent.
func (b *Broker) Shutdown() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
	b.once.Do(b.unlock)
}

// logAdapter turns nats-server's log into slog records. While the server
// starts, it keeps the error of the first Fatalf call instead of logging it:
// the server calls Fatalf when it cannot listen or start JetStream, and Start
// returns that error.
type logAdapter struct {
	l        *slog.Logger
	mu       sync.Mutex
	starting bool
	first    error
}

// started ends the start-up and returns the first fatal error, or nil.
func (a *logAdapter) started() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starting = false
	return a.first
}

func (a *logAdapter) Fatalf(format string, v ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.starting || a.first != nil {
		a.log(slog.LevelError, format, v)
		return
	}
	// The server passes the error itself as an argument (the *net.OpError of
	// a failed listen): keep it, so that errors.Is works on it.
	for _, x := range v {
		if err, ok := x.(error); ok {
			a.first = err
		}
	}
	if a.first == nil {
		a.first = fmt.Errorf(format, v...)
	}
}

// log formats only what the handler keeps: a discarded log costs nothing.
func (a *logAdapter) log(level slog.Level, format string, v []any) {
	if a.l.Enabled(context.Background(), level) {
		a.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

func (a *logAdapter) Noticef(format string, v ...any) { a.log(slog.LevelDebug, format, v) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.log(slog.LevelError, format, v) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.log(slog.LevelDebug, format, v) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.log(slog.LevelDebug, format, v) }
