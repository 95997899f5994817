package dispatcher

import (
	"testing"
	"time"
)

// TestTenantCap: alone a tenant has every slot; with others active it has
// the slots less what each keeps (one more than its recent peak, at most a
// fair share), and never less than one.
func TestTenantCap(t *testing.T) {
	const window = 30 * time.Second
	now := time.Now()
	busy := func(inflight, peak int) *tenantLoad {
		return &tenantLoad{inflight: inflight, peak: peak, peakAt: now, last: now}
	}
	for _, tt := range []struct {
		name   string
		slots  int
		others []*tenantLoad
		want   int
	}{
		{"alone", 8, nil, 8},
		{"a new other keeps one", 8, []*tenantLoad{busy(0, 0)}, 7},
		{"a quiet other keeps one more than its peak", 8, []*tenantLoad{busy(0, 1)}, 6},
		{"a busy other keeps at most half", 8, []*tenantLoad{busy(6, 6)}, 4},
		{"an other at its peak of two", 8, []*tenantLoad{busy(1, 2)}, 5},
		{"three others, share of two", 8, []*tenantLoad{busy(5, 5), {last: now}, busy(2, 2)}, 3},
		{"more tenants than slots", 2, []*tenantLoad{busy(1, 1), busy(1, 1), busy(1, 1)}, 1},
		{"an other idle past the window", 8, []*tenantLoad{{last: now.Add(-time.Minute), peakAt: now.Add(-time.Minute), peak: 8}}, 8},
		{"an old peak is forgotten", 8, []*tenantLoad{{inflight: 1, peak: 6, peakAt: now.Add(-time.Minute), last: now}}, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tenants := map[string]*tenantLoad{"self": {last: now}}
			for i, o := range tt.others {
				tenants[string(rune('a'+i))] = o
			}
			var f fairness
			if got, _ := f.capOf(tenants, "self", tt.slots, now, window); got != tt.want {
				t.Errorf("cap = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestTenantSettingsReload: a reload's tenant window and held bound are
// what new requests get, and invalid ones are refused.
func TestTenantSettingsReload(t *testing.T) {
	s := &Server{}
	s.cur.Store(newLive(DefaultOptions()))
	o, err := s.options(Settings{QueueWait: time.Minute, TenantWindow: 5 * time.Second, TenantHeld: 3})
	if err != nil {
		t.Fatal(err)
	}
	s.cur.Store(newLive(o))
	if lv := s.live(); lv.TenantWindow != 5*time.Second || lv.TenantHeld != 3 {
		t.Errorf("after the reload: window %s, held %d; want 5s and 3", lv.TenantWindow, lv.TenantHeld)
	}
	if o, err := s.options(Settings{QueueWait: time.Minute}); err != nil || o.TenantWindow != 0 || o.TenantHeld != DefaultTenantHeld {
		t.Errorf("window 0 and no held bound: window %s, held %d, err %v; want off and the default bound", o.TenantWindow, o.TenantHeld, err)
	}
	for _, st := range []Settings{{TenantWindow: -time.Second}, {TenantHeld: -1}} {
		if _, err := s.options(st); err == nil {
			t.Errorf("options(%+v) = nil error, want it refused", st)
		}
	}
}
