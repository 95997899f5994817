package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
)

// peersIdle is how long the view of the other workers outlives its last use.
const peersIdle = time.Minute

// peersWait bounds how long a job waits for the view to hold the bucket.
const peersWait = 2 * time.Second

// peers is a worker's view of the node bucket, which it needs only for a
// job its own Ollama cannot run (passon.go): every record of every worker
// would otherwise reach every worker on every heartbeat. The view starts
// when a job first asks for it and stops peersIdle after the last one did.
type peers struct {
	want chan struct{} // a job asks for the view; capacity 1

	mu    sync.Mutex
	view  *fleet.View   // nil while not watching
	ready chan struct{} // closed when the current attempt has a view, or failed
	used  time.Time
}

func newPeers() *peers {
	return &peers{want: make(chan struct{}, 1), ready: make(chan struct{})}
}

// get returns the view, starting it if need be; nil when it cannot be had
// within peersWait or ctx.
func (p *peers) get(ctx context.Context) *fleet.View {
	p.mu.Lock()
	p.used = time.Now()
	v, ready := p.view, p.ready
	p.mu.Unlock()
	if v != nil {
		return v
	}
	poke(p.want)
	t := time.NewTimer(peersWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view
}

// peek returns the view without waiting for it, nil when it is not ready;
// it starts the view if need be, for the next call.
func (p *peers) peek() *fleet.View {
	p.mu.Lock()
	p.used = time.Now()
	v := p.view
	p.mu.Unlock()
	if v == nil {
		poke(p.want)
	}
	return v
}

// set publishes v, or the end of the current view (nil): the jobs that
// wait for it hear either, and the next one asks anew after an end.
func (p *peers) set(v *fleet.View) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.view = v
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	if v == nil {
		p.ready = make(chan struct{})
	}
}

func (p *peers) idle(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Sub(p.used) > peersIdle
}

// run watches the bucket while jobs use the view, until ctx is done.
func (p *peers) run(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.want:
		}
		p.watch(ctx, kv, log)
	}
}

// watch runs one view until it is idle, fails or ctx is done.
func (p *peers) watch(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v, err := fleet.Watch(wctx, kv)
	if err != nil {
		log.Warn("watch the other workers", "err", err)
		p.set(nil)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := v.Run(wctx); err != nil {
			log.Warn("watch the other workers", "err", err)
		}
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-v.Ready():
		p.set(v)
	case <-done:
		p.set(nil)
		return
	case <-ctx.Done():
		p.set(nil)
		return
	}
	defer p.set(nil)
	t := time.NewTicker(peersIdle / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case now := <-t.C:
			if p.idle(now) {
				return
			}
		case <-p.want: // Already watching.
		}
	}
}
