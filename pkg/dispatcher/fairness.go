package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
)

// Per-tenant fairness (docs/scheduling.md, "Tenant fairness"). With API
// keys and Options.TenantWindow set, each tenant (a key's tenant) may have
// at most a cap of jobs in flight from this dispatcher per model, queued in
// JetStream or running: the slots of the ready workers that serve the
// model, less a reservation for each other tenant active within the
// window, one more than that tenant's recent peak in flight (at most a fair
// share of the slots). Alone, a tenant has every slot. A request beyond its
// tenant's cap waits here, unqueued, in a FIFO of its tenant's (at most
// Options.TenantHeld), and goes on as the tenant's jobs end. So another
// tenant always finds its reservation free in the fleet: a flood delays it
// by a worker's pickup, not by the flood's backlog.

// Errors of fairness.acquire.
var (
	// errContended: the tenant's FIFO is full while other tenants are
	// active, so its share is in use: 429, retry soon.
	errContended = errors.New("dispatcher: tenant's share in use")
	// errNoRoom: the tenant's FIFO is full and it is alone: the whole
	// fleet is busy with its work, Ollama's 503.
	errNoRoom = errors.New("dispatcher: fleet busy")
	// errHeldTooLong: the request waited its whole queue wait for its turn.
	errHeldTooLong = errors.New("dispatcher: tenant's turn did not come")
)

// fairness keeps, per model and tenant, the jobs in flight and the
// requests held. It is safe for concurrent use.
type fairness struct {
	slots func(model string) int // the ready workers' slots for the model
	mu    sync.Mutex
	loads map[string]map[string]*tenantLoad // model → tenant; only tenants in flight, held or recently active
	held  int                               // requests held, every model and tenant
}

// tenantLoad is one tenant's use of one model. fairness.mu guards it.
type tenantLoad struct {
	inflight int
	peak     int       // most in flight since peakAt
	peakAt   time.Time // when peak was set; older than the window, it is forgotten
	last     time.Time // the latest request
	fifo     []*heldRequest
}

type heldRequest struct {
	granted chan struct{} // closed when the request may go on
	done    bool          // granted; fairness.mu guards it
}

// readySlots sums the slots of the ready workers that have the model;
// without a view there are none.
func readySlots(v *fleet.View) func(string) int {
	return func(model string) int {
		n := 0
		if v == nil {
			return 0
		}
		for _, node := range v.Nodes() {
			if node.State == fleet.StateReady && node.HasModel(model) {
				n += node.SlotsTotal
			}
		}
		return n
	}
}

// reserve is what tenant l keeps for itself at now: one more than its
// recent peak in flight, at most share. The one more is for a burst: the
// request that would set a new peak finds a slot free too, instead of
// waiting for one of the flood's jobs to end.
func (l *tenantLoad) reserve(now time.Time, window time.Duration, share int) int {
	p := l.inflight
	if now.Sub(l.peakAt) <= window {
		p = max(p, l.peak)
	}
	return min(p+1, share)
}

// active tells whether l counts as a tenant to keep room for at now.
func (l *tenantLoad) active(now time.Time, window time.Duration) bool {
	return l.inflight > 0 || len(l.fifo) > 0 || now.Sub(l.last) <= window
}

// capOf returns tenant's cap on jobs in flight for a model with slots,
// and how many other tenants are active. f.mu is held.
func (f *fairness) capOf(tenants map[string]*tenantLoad, tenant string, slots int, now time.Time, window time.Duration) (int, int) {
	others := 0
	for t, l := range tenants {
		if t != tenant && l.active(now, window) {
			others++
		}
	}
	if others == 0 {
		return slots, 0
	}
	share := max(1, slots/(others+1))
	kept := 0
	for t, l := range tenants {
		if t != tenant && l.active(now, window) {
			kept += l.reserve(now, window, share)
		}
	}
	return max(1, slots-kept), others
}

// take counts one more job of l in flight. f.mu is held.
func (l *tenantLoad) take(now time.Time, window time.Duration) {
	l.inflight++
	if l.inflight >= l.peak || now.Sub(l.peakAt) > window {
		l.peak, l.peakAt = l.inflight, now
	}
}

// acquire counts a job of tenant for model in flight, holding the request
// first while its tenant is at its cap, until deadline or until ctx is
// done. It returns the function that ends the job's count (call it once)
// and how long the request was held, or errContended or errNoRoom at once
// when the tenant's FIFO is full, errHeldTooLong at the deadline, or ctx's
// error.
func (f *fairness) acquire(ctx context.Context, model, tenant string, window time.Duration, maxHeld int, deadline time.Time) (func(), time.Duration, error) {
	now := time.Now()
	slots := f.slots(model)
	f.mu.Lock()
	tenants := f.tenants(model, now, window)
	l := tenants[tenant]
	if l == nil {
		l = &tenantLoad{}
		tenants[tenant] = l
	}
	l.last = now
	release := func() { f.release(model, tenant, window) }
	limit, others := f.capOf(tenants, tenant, slots, now, window)
	if slots == 0 || (len(l.fifo) == 0 && l.inflight < limit) {
		// No ready worker for the model: nothing to share; the job waits
		// in the queue for one, as without fairness.
		l.take(now, window)
		f.mu.Unlock()
		return release, 0, nil
	}
	if len(l.fifo) >= maxHeld {
		f.mu.Unlock()
		if others > 0 {
			return nil, 0, errContended
		}
		return nil, 0, errNoRoom
	}
	h := &heldRequest{granted: make(chan struct{})}
	l.fifo = append(l.fifo, h)
	f.held++
	f.mu.Unlock()

	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	// Caps also grow when another tenant falls idle or a worker comes:
	// the FIFO's head looks again every tick.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-h.granted:
			return release, time.Since(now), nil
		case <-tick.C:
			f.grant(model, tenant, window)
			continue
		case <-timeout.C:
			err = errHeldTooLong
		case <-ctx.Done():
			err = ctx.Err()
		}
		f.mu.Lock()
		granted := h.done
		if !granted {
			f.drop(model, tenant, h)
		}
		f.mu.Unlock()
		if granted {
			release() // Granted as it gave up: pass the turn on.
		}
		return nil, time.Since(now), err
	}
}

// tenants returns model's tenants, forgetting those neither in flight, nor
// held, nor active within the window: the map holds only tenants of keys
// that sent requests lately. f.mu is held.
func (f *fairness) tenants(model string, now time.Time, window time.Duration) map[string]*tenantLoad {
	if f.loads == nil {
		f.loads = map[string]map[string]*tenantLoad{}
	}
	tenants := f.loads[model]
	if tenants == nil {
		tenants = map[string]*tenantLoad{}
		f.loads[model] = tenants
	}
	for t, l := range tenants {
		if !l.active(now, window) {
			delete(tenants, t)
		}
	}
	return tenants
}

// drop removes held request h from tenant's FIFO. f.mu is held.
func (f *fairness) drop(model, tenant string, h *heldRequest) {
	l := f.loads[model][tenant]
	if l == nil {
		return
	}
	for i, x := range l.fifo {
		if x == h {
			l.fifo = append(l.fifo[:i], l.fifo[i+1:]...)
			f.held--
			return
		}
	}
}

// release ends one of tenant's jobs in flight for model and lets its held
// requests go on, as far as its cap allows.
func (f *fairness) release(model, tenant string, window time.Duration) {
	f.mu.Lock()
	if l := f.loads[model][tenant]; l != nil && l.inflight > 0 {
		l.inflight--
	}
	f.mu.Unlock()
	f.grant(model, tenant, window)
}

// grant lets tenant's held requests for model go on, first come first, as
// far as its cap allows.
func (f *fairness) grant(model, tenant string, window time.Duration) {
	slots := f.slots(model)
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	tenants := f.loads[model]
	l := tenants[tenant]
	if l == nil || len(l.fifo) == 0 {
		return
	}
	limit, _ := f.capOf(tenants, tenant, slots, now, window)
	for len(l.fifo) > 0 && (slots == 0 || l.inflight < limit) {
		h := l.fifo[0]
		l.fifo = l.fifo[1:]
		f.held--
		h.done = true
		l.take(now, window)
		close(h.granted)
	}
}

// heldNow returns how many requests are held.
func (f *fairness) heldNow() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

// fairTurn waits for the request's turn among its tenant's jobs for
// model: at once unless the tenant is at its cap (fairness.go). It returns
// the function to call when the job ends and the time the request was
// held, or writes the refusal itself and returns ok=false: 429 with
// Retry-After when the tenant's FIFO is full while others are active, 503
// (Ollama's "server busy") when it is full and the tenant is alone, 503
// when the turn did not come within wait. Without keys, or with
// TenantWindow 0, it holds nothing.
func (s *Server) fairTurn(w http.ResponseWriter, r *http.Request, f format, model string, lv *live) (func(), time.Duration, bool) {
	key, ok := requestKey(r)
	if !ok || lv.TenantWindow <= 0 {
		return func() {}, 0, true
	}
	release, held, err := s.fair.acquire(r.Context(), model, key.Tenant, lv.TenantWindow, lv.TenantHeld, time.Now().Add(lv.QueueWait))
	if held > 0 || err != nil {
		s.metrics.heldSeconds.Observe(held.Seconds())
	}
	switch {
	case err == nil:
		return release, held, true
	case errors.Is(err, errContended):
		s.metrics.refused.WithLabelValues("tenant_contended").Inc()
		w.Header().Set("Retry-After", "1")
		f.refuse(w, http.StatusTooManyRequests, fmt.Sprintf(
			"tenant %s has %d requests for %s waiting for its share of the fleet, which other tenants share too; retry soon", key.Tenant, lv.TenantHeld, model))
	case errors.Is(err, errNoRoom):
		s.metrics.refused.WithLabelValues("tenant_full").Inc()
		w.Header().Set("Retry-After", "1")
		f.failForwarded(w, http.StatusServiceUnavailable, busyMessage)
	case errors.Is(err, errHeldTooLong):
		s.metrics.refused.WithLabelValues("tenant_wait").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(lv.QueueWait.Seconds()))))
		f.failForwarded(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"the job waited %s for its tenant's turn and was never queued: tenant %s's jobs for %s use its share of the fleet", lv.QueueWait, key.Tenant, model))
	}
	return nil, held, false // Or the client left: nobody to answer.
}
