package worker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/internal/reload"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Settings are what a running worker changes without a restart
// (docs/operations.md, "Reloading configuration"). Run applies them on
// SIGHUP (Config.Reload) and when the workers' shared settings change, as
// Config.Reconfigure returns them. Jobs running keep running.
type Settings struct {
	LogLevel slog.Level
	// Slots is Config.Slots. More slots are pulled for at once; with fewer
	// than jobs running, the jobs finish and the worker pulls again once
	// fewer than Slots run.
	Slots int
	// InteractiveReserve is Config.InteractiveReserve, in force for the
	// next pull; jobs running keep their slots.
	InteractiveReserve int
	// Labels are Config.Labels: the node record has them from its next
	// write, within a second.
	Labels map[string]string
	// Grace is Config.Grace, for the next drain.
	Grace time.Duration
	// Restart names the settings whose new values only a restart applies:
	// Run logs them on every reload until then.
	Restart []string
}

// settings returns the settings cfg starts with.
func (c Config) settings() Settings {
	s := Settings{Slots: c.Slots, InteractiveReserve: c.InteractiveReserve, Labels: c.Labels, Grace: c.Grace}
	if c.Level != nil {
		s.LogLevel = c.Level.Level()
	}
	return s
}

// check reports the first invalid setting, as Config.Validate would.
func (s Settings) check() error {
	switch {
	case s.Slots < 1:
		return fmt.Errorf("worker: Slots must be at least 1, got %d", s.Slots)
	case s.InteractiveReserve < 0:
		return fmt.Errorf("worker: InteractiveReserve must not be negative, got %d", s.InteractiveReserve)
	case s.Grace < 0:
		return fmt.Errorf("worker: Grace must not be negative, got %s", s.Grace)
	}
	return nil
}

// use puts s in force: more free slots are pulled for at once, and the node
// record says so at its next write.
func (w *Worker) use(s Settings) {
	w.slots.Store(int64(s.Slots))
	w.reserve.Store(int64(s.InteractiveReserve))
	w.grace.Store(int64(s.Grace))
	w.mu.Lock()
	w.labels = s.Labels
	w.mu.Unlock()
	w.slotsChanged.Store(true)
	poke(w.released)
}

// reloader applies reloads to a running worker, one at a time (on
// reload.Watcher.Run's goroutine).
type reloader struct {
	cfg     Config
	w       *Worker
	log     *slog.Logger
	current Settings
}

// apply runs one reload: the settings Reconfigure returns for the shared
// text, checked, then put in force at once; a reload that fails changes
// nothing.
func (r *reloader) apply(cause reload.Cause, shared string) {
	next := r.current
	next.Restart = nil
	if r.cfg.Reconfigure != nil {
		s, err := r.cfg.Reconfigure(shared)
		if err != nil {
			r.log.Error("reload refused: keeping the settings in use", "cause", cause, "err", err)
			return
		}
		next = s
	}
	if err := next.check(); err != nil {
		r.log.Error("reload refused: keeping the settings in use", "cause", cause, "err", err)
		return
	}
	r.w.use(next)
	if r.cfg.Level != nil {
		r.cfg.Level.Set(next.LogLevel)
	}
	changed := changes(r.current, next)
	r.current = next
	if len(changed) == 0 {
		r.log.Info("reloaded: nothing changed", "cause", cause)
	} else {
		r.log.Info("reloaded", append([]any{"cause", cause}, changed...)...)
	}
	if len(next.Restart) > 0 {
		r.log.Warn("these settings changed but take effect only after a restart", "settings", strings.Join(next.Restart, ","))
	}
}

// changes lists the settings that differ from a to b as key, value pairs
// for the log, with b's values.
func changes(a, b Settings) []any {
	var out []any
	if a.LogLevel != b.LogLevel {
		out = append(out, "log_level", b.LogLevel.String())
	}
	if a.Slots != b.Slots {
		out = append(out, "slots", b.Slots)
	}
	if a.InteractiveReserve != b.InteractiveReserve {
		out = append(out, "interactive_reserve", b.InteractiveReserve)
	}
	if !maps.Equal(a.Labels, b.Labels) {
		out = append(out, "labels", labelList(b.Labels))
	}
	if a.Grace != b.Grace {
		out = append(out, "grace", b.Grace.String())
	}
	return out
}

// labelList is labels as k=v,k=v in key order.
func labelList(labels map[string]string) string {
	kv := make([]string, 0, len(labels))
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// startReloads applies the workers' shared settings, if there are any and
// cfg.Reconfigure is set, then follows them and cfg.Reload on a goroutine
// of wg until ctx is done.
func startReloads(ctx context.Context, wg *sync.WaitGroup, q *queue.Queue, w *Worker, cfg Config, log *slog.Logger) error {
	if cfg.Reload == nil && cfg.Reconfigure == nil {
		return nil
	}
	kv, err := q.Config(ctx)
	if err != nil {
		return err
	}
	watch, shared, err := reload.Watch(ctx, kv, job.ConfigWorker)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		log.Warn("cannot watch the shared settings: reloading on SIGHUP only until it can", "err", err)
	}
	r := &reloader{cfg: cfg, w: w, log: log, current: cfg.settings()}
	if shared != "" && cfg.Reconfigure != nil {
		r.apply(reload.Shared, shared)
	}
	wg.Go(func() {
		watch.Run(ctx, cfg.Reload, r.apply, func(err error) { log.Warn("shared settings", "err", err) })
	})
	return nil
}
