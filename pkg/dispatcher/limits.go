package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
	"golang.org/x/time/rate"
)

// Rate limits per API key, the same on every dispatcher (docs/security.md,
// "Rate limits"). Each key has two token buckets (golang.org/x/time/rate):
// requests per minute, refilled at RPM/60 per second up to RPM, and tokens
// per minute likewise. A dispatcher decides from its own buckets, and
// charges every admitted request, and every finished job's tokens, to the
// OLLAMAQ_LIMITS stream; every dispatcher follows that stream and charges
// the other dispatchers' requests and tokens to its own buckets. At start it
// replays the last minute, so a restart forgets nothing.
//
// Precision: a dispatcher sees another's charge after one JetStream hop
// (about a millisecond on a LAN), so requests admitted at the same moment on
// several dispatchers may together exceed a key's remaining budget by what
// each admitted in that window. Tokens are known only when a job ends, so a
// key with budget left may start several long jobs at once; its bucket then
// goes into debt and the next request waits until it is paid off.

// limitWindow is how much history a starting dispatcher replays.
const limitWindow = time.Minute

// charge is one message on the limits stream.
type charge struct {
	Process  string `json:"p"` // the dispatcher process that charged it
	Key      string `json:"k"`
	Requests int    `json:"r,omitempty"`
	Tokens   int    `json:"t,omitempty"`
}

// limiter keeps the buckets of the keys with limits.
type limiter struct {
	keys    *apikey.Cache
	js      jetstream.JetStream
	subject string
	process string
	log     *slog.Logger

	ready     chan struct{} // closed once the charges stored before run began are applied
	readyOnce sync.Once

	mu      sync.Mutex
	buckets map[string]*buckets // by key ID; only keys the cache holds
}

type buckets struct {
	rpm, tpm int
	req, tok *rate.Limiter // nil for no limit
	at       time.Time     // the latest time applied: a rate.Limiter must not go back in time
}

// newLimiter returns the limiter of dispatcher id, publishing on nc.
func newLimiter(nc *nats.Conn, keys *apikey.Cache, id string, log *slog.Logger) (*limiter, error) {
	l := &limiter{keys: keys, subject: job.LimitsSubject(id), process: job.NewID(), log: log, buckets: map[string]*buckets{},
		ready: make(chan struct{})}
	var last atomic.Int64 // unix nanoseconds of the last warning; nats.go calls the handler from several goroutines
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			now := time.Now().UnixNano()
			if prev := last.Load(); now-prev > int64(time.Second) && last.CompareAndSwap(prev, now) { // At most a line a second.
				log.Warn("rate-limit charge not stored: other dispatchers will not see it", "err", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	l.js = js
	return l, nil
}

// newBucket returns a bucket of perMinute, nil for no limit.
func newBucket(perMinute int) *rate.Limiter {
	if perMinute <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// bucketsOf returns k's buckets, made anew when its limits changed. l.mu is held.
func (l *limiter) bucketsOf(k apikey.Key) *buckets {
	b, ok := l.buckets[k.ID]
	if !ok || b.rpm != k.RPM || b.tpm != k.TPM {
		b = &buckets{rpm: k.RPM, tpm: k.TPM, req: newBucket(k.RPM), tok: newBucket(k.TPM)}
		l.buckets[k.ID] = b
	}
	return b
}

// time returns t, moved forward to the latest time b has seen. l.mu is held.
func (b *buckets) time(t time.Time) time.Time {
	if t.Before(b.at) {
		t = b.at
	}
	b.at = t
	return t
}

// maxDebt bounds a charge, in bursts: an hour's budget. A larger one (a
// worker reporting absurd counts) would hold the lock for as long as it
// takes to reserve it a burst at a time.
const maxDebt = 60

// take charges n to bucket lim at t, in debt if need be.
func take(lim *rate.Limiter, t time.Time, n int) {
	if lim == nil {
		return
	}
	n = min(n, maxDebt*lim.Burst())
	for n > 0 { // A reservation may be at most a burst.
		k := min(n, lim.Burst())
		lim.ReserveN(t, k)
		n -= k
	}
}

// limited is why a request was refused: which limit, and when to retry.
type limited struct {
	what  string // "requests" or "tokens"
	retry time.Duration
}

func (e *limited) Error() string {
	return fmt.Sprintf("rate limit of this API key exceeded (%s per minute); retry in %s", e.what, e.retry.Round(time.Second))
}

// retryAfter is e.retry in whole seconds for Retry-After, at least one.
func (e *limited) retryAfter() int { return max(1, int(math.Ceil(e.retry.Seconds()))) }

// admit takes one request from k's budget, or returns why it cannot.
func (l *limiter) admit(k apikey.Key, now time.Time) *limited {
	if k.RPM <= 0 && k.TPM <= 0 {
		return nil
	}
	l.mu.Lock()
	b := l.bucketsOf(k)
	t := b.time(now)
	if b.tok != nil {
		if left := b.tok.TokensAt(t); left < 1 {
			l.mu.Unlock()
			return &limited{"tokens", time.Duration((1 - left) / float64(b.tok.Limit()) * float64(time.Second))}
		}
	}
	if b.req != nil {
		res := b.req.ReserveN(t, 1)
		if d := res.DelayFrom(t); d > 0 {
			res.CancelAt(t)
			l.mu.Unlock()
			return &limited{"requests", d}
		}
	}
	l.mu.Unlock()
	l.publish(charge{Process: l.process, Key: k.ID, Requests: 1})
	return nil
}

// spend charges the tokens a finished job of key k used.
func (l *limiter) spend(k apikey.Key, tokens int) {
	if k.TPM <= 0 || tokens <= 0 {
		return
	}
	l.mu.Lock()
	b := l.bucketsOf(k)
	take(b.tok, b.time(time.Now()), tokens)
	l.mu.Unlock()
	l.publish(charge{Process: l.process, Key: k.ID, Tokens: tokens})
}

func (l *limiter) publish(c charge) {
	b, _ := json.Marshal(c) // A struct of strings and ints always marshals.
	if _, err := l.js.PublishAsync(l.subject, b); err != nil {
		l.log.Warn("rate-limit charge not sent: other dispatchers will not see it", "key", c.Key, "err", err)
	}
}

// apply charges another dispatcher's charge, stored at ts, to the buckets.
func (l *limiter) apply(c charge, ts time.Time) {
	if c.Process == l.process || c.Requests < 0 || c.Tokens < 0 {
		return
	}
	k, ok := l.keys.Get(c.Key)
	if !ok || (k.RPM <= 0 && k.TPM <= 0) {
		return // A key this dispatcher does not know, or one without limits: nothing to keep.
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketsOf(k)
	if now := time.Now(); ts.After(now) {
		ts = now // Another machine's clock ahead of ours must not refill the buckets.
	}
	t := b.time(ts)
	take(b.req, t, c.Requests)
	take(b.tok, t, c.Tokens)
}

// run follows every dispatcher's charges, from limitWindow ago, until ctx
// is done. The ordered consumer recreates itself after a gap or a
// reconnection.
func (l *limiter) run(ctx context.Context) error {
	start := time.Now().Add(-limitWindow)
	st, err := l.js.Stream(ctx, job.LimitsStream)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("follow rate-limit charges: %w", err)
	}
	// What was stored by now is the history to replay before the buckets
	// are right; nothing stored within the window means nothing to replay.
	state := st.CachedInfo().State
	caughtUp := func(seq uint64) bool { return state.LastTime.Before(start) || seq >= state.LastSeq }
	if caughtUp(0) {
		l.readyOnce.Do(func() { close(l.ready) })
	}
	cons, err := l.js.OrderedConsumer(ctx, job.LimitsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{job.LimitsPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // Stopped before it began.
		}
		return fmt.Errorf("follow rate-limit charges: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("follow rate-limit charges: %w", err)
	}
	stopped := make(chan struct{})
	defer func() { it.Stop(); <-stopped }()
	go func() {
		defer close(stopped)
		<-ctx.Done()
		it.Stop()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("follow rate-limit charges: %w", err)
		}
		var c charge
		md, merr := m.Metadata()
		if merr == nil && json.Unmarshal(m.Data(), &c) == nil {
			l.apply(c, md.Timestamp)
		}
		if merr == nil && (caughtUp(md.Sequence.Stream) || md.NumPending == 0) {
			l.readyOnce.Do(func() { close(l.ready) })
		}
	}
}
