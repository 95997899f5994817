// Package reload runs a daemon's reloads (docs/operations.md, "Reloading
// configuration"): on each signal its main passes on (SIGHUP) and on each
// change of its entry in the shared settings bucket (ollamaq_config), it
// calls the daemon's apply func, one reload at a time.
//
// It imports NATS's jetstream package only.
package reload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cause says what asked for a reload.
type Cause string

const (
	// Signal is SIGHUP: the configuration file and the certificates are
	// read again.
	Signal Cause = "signal"
	// Shared is a change of the shared settings entry.
	Shared Cause = "shared settings"
)

// retryWatch is how long Run waits before it watches the entry again after
// its watch ended.
const retryWatch = 2 * time.Second

// Watcher follows one entry of the shared settings bucket.
type Watcher struct {
	kv   jetstream.KeyValue
	key  string
	w    jetstream.KeyWatcher
	last string // the text last handed to apply (or returned by Watch)
}

// Watch starts watching entry key of kv and returns its text now: "" when
// it does not exist or was deleted. It fails when the bucket cannot be
// watched (permissions, a server that does not answer within ctx).
func Watch(ctx context.Context, kv jetstream.KeyValue, key string) (*Watcher, string, error) {
	w := &Watcher{kv: kv, key: key}
	if err := w.start(ctx); err != nil {
		return nil, "", err
	}
	for {
		select {
		case e, ok := <-w.w.Updates():
			if !ok {
				return nil, "", fmt.Errorf("watch shared settings %s: the watch ended", key)
			}
			if e == nil { // The current value is in.
				return w, w.last, nil
			}
			w.last = text(e)
		case <-ctx.Done():
			_ = w.w.Stop() // Stopping a watch that failed to start only fails harmlessly.
			return nil, "", fmt.Errorf("watch shared settings %s: %w", key, ctx.Err())
		}
	}
}

func (w *Watcher) start(ctx context.Context) error {
	kw, err := w.kv.Watch(ctx, w.key)
	if err != nil {
		return fmt.Errorf("watch shared settings %s: %w", w.key, err)
	}
	w.w = kw
	return nil
}

// text is what entry e says: its value, or "" for a delete or purge.
func text(e jetstream.KeyValueEntry) string {
	if e.Operation() != jetstream.KeyValuePut {
		return ""
	}
	return string(e.Value())
}

// Run calls apply on each receive from signal (with the entry's last text)
// and on each change of the entry's text, until ctx is done; apply runs on
// Run's goroutine, so reloads never overlap. When the watch ends, it is
// started again after a pause, and onError told; the entry as the new
// watch finds it is applied only if it changed meanwhile.
func (w *Watcher) Run(ctx context.Context, signal <-chan struct{}, apply func(cause Cause, shared string), onError func(error)) {
	defer func() { _ = w.w.Stop() }() // Stopping an ended watch only fails harmlessly.
	updates := w.w.Updates()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-signal:
			apply(Signal, w.last)
		case e, ok := <-updates:
			switch {
			case !ok:
				if ctx.Err() != nil {
					return
				}
				onError(errors.New("the watch of the shared settings ended; watching again"))
				updates, retry = nil, time.After(retryWatch)
			case e == nil:
				// The current value after a new watch: applied below if it changed.
			case text(e) != w.last:
				w.last = text(e)
				apply(Shared, w.last)
			}
		case <-retry:
			retry = nil
			if err := w.start(ctx); err != nil {
				onError(err)
				retry = time.After(retryWatch)
				continue
			}
			updates = w.w.Updates()
		}
	}
}
