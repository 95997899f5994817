package dispatcher

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// defaultMaxConns caps open HTTP connections when Config.MaxConns is 0.
	defaultMaxConns = 4096
	// refusalWait bounds each step of a refusal: reading the request (over
	// HTTPS, the handshake first), writing the 503, reading what follows.
	refusalWait = time.Second
	// maxRefusing bounds the refused connections answered at once; past it
	// a refused connection is closed without an answer.
	maxRefusing = 64
)

// connCap returns the cap on open HTTP connections for want (0: the
// default), lowered to half of fdLimit, the process's open-file limit (0:
// unknown), so that the embedded NATS server, the NATS connection and the
// store keep file descriptors when HTTP clients take all they may.
func connCap(want int, fdLimit uint64) int {
	n := want
	if n == 0 {
		n = defaultMaxConns
	}
	if half := fdLimit / 2; fdLimit != 0 && uint64(n) > half {
		n = int(max(half, 1))
	}
	return n
}

// connLimiter is a net.Listener that keeps at most cap(slots) of its
// connections open. Past that, Accept answers a new connection itself with
// 503 and closes it, on a goroutine of its own and within three times
// refusalWait, and accepts the next: a client holding thousands of idle
// connections cannot take the file descriptors the rest of the process
// needs.
type connLimiter struct {
	net.Listener
	slots    chan struct{} // one per open connection
	refusing chan struct{} // one per refusal being answered
	answers  sync.WaitGroup
	refusal  []byte                  // the whole 503 response
	secure   func(net.Conn) net.Conn // TLS for a refusal, nil for plain HTTP
	log      *slog.Logger
	refused  prometheus.Counter
	unlogged atomic.Int64 // refusals since the last warning
	lastWarn atomic.Int64 // unix nanoseconds of the last warning
}

// newConnLimiter limits ln to limit connections, registering its metrics
// on reg. secure, if set, wraps a refused connection in TLS before the 503.
func newConnLimiter(ln net.Listener, limit int, secure func(net.Conn) net.Conn, log *slog.Logger, reg prometheus.Registerer) *connLimiter {
	l := &connLimiter{Listener: ln, slots: make(chan struct{}, limit), refusing: make(chan struct{}, maxRefusing),
		refusal: refusalResponse(limit), secure: secure, log: log}
	l.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_http_connections_refused_total",
		Help: "HTTP connections refused with 503 because --max-conns were open."})
	reg.MustRegister(l.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_connections_open",
			Help: "HTTP connections open."}, func() float64 { return float64(len(l.slots)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ollamamax_http_connections_max",
			Help: "HTTP connections that may be open at once (--max-conns, at most half the open-file limit)."},
			func() float64 { return float64(cap(l.slots)) }))
	return l
}

// refusalResponse is the 503 a connection past the cap gets.
func refusalResponse(limit int) []byte {
	body := job.ErrorBody(fmt.Sprintf("too many open connections: the dispatcher's limit is %d (--max-conns)", limit))
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// Accept returns the next connection while fewer than the cap are open.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.refuse(c)
		}
	}
}

// refuse answers c with the 503 on a goroutine of its own, or closes it at
// once when maxRefusing are being answered already.
func (l *connLimiter) refuse(c net.Conn) {
	l.refused.Inc()
	l.warn()
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = c.Close() // Answering would take another goroutine and file descriptor.
		return
	}
	l.answers.Go(func() {
		defer func() { <-l.refusing }()
		l.answer(c)
	})
}

func (l *connLimiter) answer(c net.Conn) {
	if l.secure != nil {
		c = l.secure(c)
	}
	defer func() { _ = c.Close() }() // Nothing more to tell the client.
	// Read the request first: a client that gets an answer before it sent
	// its request takes it for garbage (Go's reports an "unsolicited
	// response"). Whatever it sent, or failed to send, the answer is the same.
	_ = c.SetReadDeadline(time.Now().Add(refusalWait)) // A failure shows as a failed read.
	_, _ = http.ReadRequest(bufio.NewReader(io.LimitReader(c, 64<<10)))
	_ = c.SetWriteDeadline(time.Now().Add(refusalWait))
	if _, err := c.Write(l.refusal); err != nil {
		return
	}
	// Half-close, then read what the client sends until it closes or the
	// deadline passes: closing with its bytes unread would reset the
	// connection, and the client could lose the answer.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // If it fails, the read below ends at the deadline.
	}
	_ = c.SetReadDeadline(time.Now().Add(refusalWait))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10)) // Any error ends the discarding.
}

// warn logs the refusals at most once a second.
func (l *connLimiter) warn() {
	l.unlogged.Add(1)
	now, last := time.Now().UnixNano(), l.lastWarn.Load()
	if now-last < int64(time.Second) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("refusing HTTP connections: too many open (--max-conns)", "max_conns", cap(l.slots), "refused", l.unlogged.Swap(0))
}

// wait blocks until the refusals being answered are done; call it once the
// listener is closed.
func (l *connLimiter) wait() { l.answers.Wait() }

// limitedConn gives its slot back when it is closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite lets http.Server half-close the connection before it closes
// it, as it does with a bare TCP connection.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
