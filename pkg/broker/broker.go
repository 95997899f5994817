// Package broker runs the embedded nats-server with JetStream that a
// dispatcher starts when no NATS URL is configured.
//
// It imports nats-server and nats.go only.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures the embedded server.
type Config struct {
	// Listen is the host:port for NATS clients (workers on other machines).
	// Loopback by default; "" disables the listener (in-process clients only).
	Listen string
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// MaxPayload is the largest message the server accepts, in bytes.
	MaxPayload int32
	// SyncAlways makes JetStream fsync every write: slower, but no acknowledged
	// job is lost in an OS crash. The default syncs every two minutes.
	SyncAlways bool
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
}

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
	return nil
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
	s *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "ollamamax",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, _ := splitHostPort(cfg.Listen) // Validated above.
		opts.Host, opts.Port = host, port
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(&logAdapter{cfg.Logger}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("start nats-server: not ready after 15s (is %s in use?)", cfg.Listen)
	}
	return &Broker{s: s}, nil
}

// ClientURL is the URL clients on other processes use, or "" without a listener.
func (b *Broker) ClientURL() string {
	if b.s.Addr() == nil {
		return ""
	}
	return b.s.ClientURL()
}

// Connect returns an in-process client connection: no TCP, no listener needed.
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

// Shutdown stops the server and waits for it. It is idempotent.
func (b *Broker) Shutdown() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
}

type logAdapter struct{ l *slog.Logger }

func (a *logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
