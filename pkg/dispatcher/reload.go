package dispatcher

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/internal/reload"
	"github.com/ollamamax/ollamamax/internal/tlsreload"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Settings are what a running dispatcher changes without a restart
// (docs/operations.md, "Reloading configuration"). Run applies them on
// SIGHUP (Config.Reload) and when the dispatchers' shared settings change,
// as Config.Reconfigure returns them. Requests already admitted keep the
// limits they were admitted under; an answer streaming keeps its bound on
// silence; new requests get the new ones.
type Settings struct {
	LogLevel slog.Level
	// Origins, MaxBody, BodyBudget, QueueWait, MaxQueued, QueueFullWait,
	// TenantWindow, TenantHeld, MaxSilence and Stall are the Options of
	// those names.
	Origins             []string
	MaxBody, BodyBudget int64
	QueueWait           time.Duration
	MaxQueued           int
	QueueFullWait       time.Duration
	TenantWindow        time.Duration
	TenantHeld          int
	MaxSilence, Stall   time.Duration
	// TLSCert and TLSKey are the API's certificate files, read again on
	// each SIGHUP and whenever they name other files; turning HTTPS on or
	// off takes a restart.
	TLSCert, TLSKey string
	// Restart names the settings whose new values only a restart applies:
	// Run logs them on every reload until then.
	Restart []string
}

// settings returns the settings cfg starts with.
func (c Config) settings() Settings {
	s := Settings{Origins: c.Origins, MaxBody: c.MaxBody, BodyBudget: c.BodyBudget, QueueWait: c.QueueWait, MaxQueued: c.MaxQueued,
		QueueFullWait: c.QueueFullWait, TenantWindow: c.TenantWindow, TenantHeld: c.TenantHeld, MaxSilence: c.MaxSilence, Stall: c.Stall,
		TLSCert: c.TLSCert, TLSKey: c.TLSKey}
	if c.Level != nil {
		s.LogLevel = c.Level.Level()
	}
	return s
}

// live are the Options a reload changes, with what follows from them.
type live struct {
	Options
	origins []string // allowedOrigins(Options.Origins)
}

func newLive(o Options) *live { return &live{Options: o, origins: allowedOrigins(o.Origins)} }

// live returns the settings in force now. A request reads what it needs
// once: a reload meanwhile does not change it halfway.
func (s *Server) live() *live { return s.cur.Load() }

// setStall tells the requester how long a started job may be silent
// before its delivery is NAKed (Options.Stall).
func (s *Server) setStall(d time.Duration) {
	stall := cmp.Or(d, queue.DefaultStall)
	s.req.SetStall(max(stall, 0), func(id string, attempt int, why string) {
		if why == queue.NakLost {
			s.metrics.repliesLost.Inc()
			s.log.Info("replies lost on the way: asked for the job's redelivery", "job", id, "attempt", attempt)
			return
		}
		s.metrics.stalled.Inc()
		s.log.Info("worker silent: asked for the job's redelivery", "job", id, "attempt", attempt, "after", stall)
	})
}

// options returns the Options with the limits of st, checked as
// NewServer checks them.
func (s *Server) options(st Settings) (Options, error) {
	o := s.live().Options
	o.Origins, o.MaxBody, o.BodyBudget, o.QueueWait, o.MaxQueued = st.Origins, st.MaxBody, st.BodyBudget, st.QueueWait, st.MaxQueued
	o.QueueFullWait, o.MaxSilence, o.Stall = st.QueueFullWait, st.MaxSilence, st.Stall
	o.TenantWindow, o.TenantHeld = st.TenantWindow, st.TenantHeld
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o.withDefaults(), nil
}

// use puts o, from options, in force.
func (s *Server) use(o Options) {
	s.cur.Store(newLive(o))
	s.bodies.resize(o.BodyBudget)
	s.setStall(o.Stall)
}

// reloader applies reloads to a running dispatcher, one at a time (on
// reload.Watcher.Run's goroutine).
type reloader struct {
	cfg     Config
	h       *Server
	b       *broker.Broker                    // nil with an external NATS server
	cert    *tlsreload.Value[tls.Certificate] // nil without HTTPS
	maxBody int64                             // the largest body the NATS connection carries
	log     *slog.Logger
	current Settings
}

// apply runs one reload: the settings Reconfigure returns for the shared
// text, checked, then the certificates read (on SIGHUP, or when their
// files change), then everything changed at once. A reload that fails
// any step changes nothing.
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
	if (next.TLSCert == "") != (r.cert == nil) {
		// HTTP to HTTPS or back: the listener is made at start.
		next.Restart = append(next.Restart, "tls-cert")
		next.TLSCert, next.TLSKey = r.current.TLSCert, r.current.TLSKey
	}
	if limit := r.maxBody; limit < cmp.Or(next.MaxBody, DefaultOptions().MaxBody) {
		next.MaxBody = limit // As at start: headers need room too.
	}
	opts, err := r.h.options(next)
	if err != nil {
		r.log.Error("reload refused: keeping the settings in use", "cause", cause, "err", err)
		return
	}
	var cert *tls.Certificate
	certFiles := next.TLSCert != r.current.TLSCert || next.TLSKey != r.current.TLSKey
	if r.cert != nil && (cause == reload.Signal || certFiles) {
		if cert, err = tlsreload.KeyPair(next.TLSCert, next.TLSKey)(); err != nil {
			r.log.Error("reload refused: the HTTPS certificate does not load; keeping the settings and certificates in use", "cause", cause, "err", err)
			return
		}
	}
	natsTLS := cause == reload.Signal && r.b != nil && r.b.TLSFiles().Cert != ""
	if natsTLS {
		// Last of the steps that can fail: it changes the certificate
		// itself, or nothing.
		if err := r.b.ReloadTLS(); err != nil {
			r.log.Error("reload refused: the NATS TLS certificate does not load; keeping the settings and certificates in use", "cause", cause, "err", err)
			return
		}
	}
	r.h.use(opts)
	if cert != nil {
		r.cert.Store(cert)
	}
	if r.cfg.Level != nil {
		r.cfg.Level.Set(next.LogLevel)
	}
	changed := changes(r.current, next)
	if cert != nil {
		changed = append(changed, "https_certificate", next.TLSCert)
	}
	if natsTLS {
		changed = append(changed, "nats_certificate", r.b.TLSFiles().Cert)
	}
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
	add := func(differ bool, key string, v any) {
		if differ {
			out = append(out, key, v)
		}
	}
	add(a.LogLevel != b.LogLevel, "log_level", b.LogLevel.String())
	add(!slices.Equal(a.Origins, b.Origins), "origins", strings.Join(b.Origins, ","))
	add(a.MaxBody != b.MaxBody, "max_body", b.MaxBody)
	add(a.BodyBudget != b.BodyBudget, "body_budget", b.BodyBudget)
	add(a.QueueWait != b.QueueWait, "queue_wait", b.QueueWait.String())
	add(a.MaxQueued != b.MaxQueued, "max_queued", b.MaxQueued)
	add(a.QueueFullWait != b.QueueFullWait, "queue_full_wait", b.QueueFullWait.String())
	add(a.TenantWindow != b.TenantWindow, "tenant_window", b.TenantWindow.String())
	add(a.TenantHeld != b.TenantHeld, "tenant_held", b.TenantHeld)
	add(a.MaxSilence != b.MaxSilence, "max_silence", b.MaxSilence.String())
	add(a.Stall != b.Stall, "stall", b.Stall.String())
	return out
}

// startReloads applies the dispatchers' shared settings, if there are any
// and r.cfg.Reconfigure is set, then follows them and r.cfg.Reload on a
// goroutine of wg until ctx is done.
func startReloads(ctx context.Context, wg *sync.WaitGroup, q *queue.Queue, r reloader) error {
	if r.cfg.Reload == nil && r.cfg.Reconfigure == nil {
		return nil
	}
	kv, err := q.Config(ctx)
	if err != nil {
		return err
	}
	w, shared, err := reload.Watch(ctx, kv, job.ConfigDispatcher)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		r.log.Warn("cannot watch the shared settings: reloading on SIGHUP only until it can", "err", err)
	}
	if shared != "" && r.cfg.Reconfigure != nil {
		r.apply(reload.Shared, shared)
	}
	wg.Go(func() {
		w.Run(ctx, r.cfg.Reload, r.apply, func(err error) { r.log.Warn("shared settings", "err", err) })
	})
	return nil
}
