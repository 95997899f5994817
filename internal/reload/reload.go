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

// The pauses before Run watches the entry again after a watch failed to
// start or ended: from retryWatch, doubling up to maxRetryWatch, so that a
// process whose credentials may not watch it (an auth directory older than
// the bucket, before ollamaq auth upgrade) tries now and then, not always.
const (
	retryWatch    = 2 * time.Second
	maxRetryWatch = time.Minute
)

// Watcher follows one entry of the shared settings bucket.
type Watcher struct {
	kv   jetstream.KeyValue
	key  string
	w    jetstream.KeyWatcher // nil while not watching
	last string               // the text last handed to apply (or returned by Watch)
}

// Watch starts watching entry key of kv and returns its text now: "" when
// it does not exist or was deleted. When the watch cannot start
// (permissions, a server that does not answer), it returns the error with
// a Watcher whose Run tries again later; the process then reloads on
// signals only until it can.
func Watch(ctx context.Context, kv jetstream.KeyValue, key string) (*Watcher, string, error) {
	w := &Watcher{kv: kv, key: key}
	if err := w.start(ctx); err != nil {
		return w, "", err
	}
	for {
		select {
		case e, ok := <-w.w.Updates():
			if !ok {
				w.w = nil
				return w, "", fmt.Errorf("watch shared settings %s: the watch ended", key)
			}
			if e == nil { // The current value is in.
				return w, w.last, nil
			}
			w.last = text(e)
		case <-ctx.Done():
			_ = w.w.Stop() // Stopping a watch that failed to start only fails harmlessly.
			w.w = nil
			return w, "", fmt.Errorf("watch shared settings %s: %w", key, ctx.Err())
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
// Run's goroutine, so reloads never overlap. When the watch ends, or never
// started, it is started again after a pause, and onError told; the entry
// as the new watch finds it is applied only if it changed meanwhile.
func (w *Watcher) Run(ctx context.Context, signal <-chan struct{}, apply func(cause Cause, shared string), onError func(error)) {
	defer func() {
		if w.w != nil {
			_ = w.w.Stop() // Stopping an ended watch only fails harmlessly.
		}
	}()
	var updates <-chan jetstream.KeyValueEntry
	var retry <-chan time.Time
	pause := retryWatch
	restarted, seen := false, false // a watch started by Run, and whether it found the entry
	if w.w != nil {
		updates = w.w.Updates()
	} else {
		retry = time.After(pause)
	}
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
				w.w, updates, retry = nil, nil, time.After(pause)
			case e == nil: // A new watch found what there is now.
				pause = retryWatch
				if restarted && !seen && w.last != "" { // Deleted while unwatched.
					w.last = ""
					apply(Shared, w.last)
				}
				restarted = false
			default:
				seen = true
				if text(e) != w.last {
					w.last = text(e)
					apply(Shared, w.last)
				}
			}
		case <-retry:
			retry = nil
			if err := w.start(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				pause = min(2*pause, maxRetryWatch)
				onError(fmt.Errorf("%w; trying again in %s", err, pause))
				retry = time.After(pause)
				continue
			}
			updates, restarted, seen = w.w.Updates(), true, false
		}
	}
}
