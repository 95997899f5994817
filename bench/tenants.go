package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollamamax/ollamamax/pkg/apikey"
)

// runTenants measures what one tenant flooding the fleet does to another:
// the quiet tenant's seeded Poisson arrivals of short streamed answers, on
// the idle fleet and then while the flooding tenant keeps tenFloodPerSlot
// times the fleet's slots in flight, through OllamaMax with tenant fairness
// (the dispatcher's default --tenant-window), through OllamaMax with it off
// (--tenant-window 0, the policy before), and through nginx least_conn in
// front of the same simulators. The quiet tenant's queue wait is its time
// to first token less the simulators' fixed time to the first token.
func runTenants(ctx context.Context, l *lab, p params, s *section) error {
	if !l.hasFlag("dispatcher", "keys") {
		s.skipped = true
		s.notef("Not measured: this dispatcher binary has no `--keys` flag, so there are no tenants.")
		return nil
	}
	const ttft = 5 * time.Millisecond
	flooders := p.tenSims * p.tenSlots * p.tenFloodPerSlot
	floodSvc := time.Duration(float64(p.tenFloodTokens) / p.tenTPS * float64(time.Second))
	arr := poissonArrivals(20261201, p.tenQuietRate, p.tenQuietDur, [2]int{p.tenQuietTokens, p.tenQuietTokens})
	s.design = []string{fmt.Sprintf(
		"%d simulated Ollamas (`--parallel %d`, %g tokens/s per stream, %s to the first token), each behind a worker "+
			"with `--slots %d`, one dispatcher with `--keys` and two keys of two tenants. The quiet tenant sends "+
			"open-loop Poisson arrivals at %g/s for %s (%d streamed `/api/generate` requests of %d tokens). Its queue "+
			"wait is its time to first token, from the arrival's due time, less the simulators' fixed %s: the time "+
			"from the request's arrival to its start on a simulator, plus what the dispatcher and worker add. "+
			"It is measured on the idle fleet, then while the flooding tenant keeps %d non-streamed requests of %d "+
			"tokens (%s each) in flight, %d times the fleet's slots, closed loop. Every simulator has the model loaded "+
			"before the first run (this scenario is not about model loads). Before the flood starts the quiet "+
			"tenant sends one request, so that it is active (within `--tenant-window`) when the flood arrives; its "+
			"arrivals begin %s after the flood, once the flood holds every slot it may. The same runs go to OllamaMax "+
			"with tenant fairness (the dispatcher's default `--tenant-window 30s`), to OllamaMax with `--tenant-window 0` "+
			"(every request queued in JetStream at once, in arrival order: the policy before), and to nginx `least_conn` "+
			"in front of the same simulators. A request not answered %s after the last arrival is canceled and counts "+
			"as not completed.",
		p.tenSims, p.tenSlots, p.tenTPS, ttft, p.tenSlots, p.tenQuietRate, p.tenQuietDur, len(arr), p.tenQuietTokens, ttft,
		flooders, p.tenFloodTokens, floodSvc, p.tenFloodPerSlot, p.tenSettle, p.tenDrain)}

	sims := make([]*simProc, p.tenSims)
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("tenants-sim%d", i), simOpts{models: "llama3.2", tps: p.tenTPS, ttft: ttft,
			parallel: p.tenSlots, tokens: p.tenQuietTokens, seed: int64(i + 1), maxQueue: 4096}); err != nil {
			return err
		}
	}
	// The model loaded on every simulator, as on a fleet that serves it:
	// a worker whose Ollama has not loaded it would take jobs only once
	// they waited --cold-after (warm first), and this scenario is not
	// about loads.
	for i, sim := range sims {
		if _, fails := split([]result{do(ctx, newHTTPClient(1), sim.url+"/api/generate",
			[]byte(`{"model":"llama3.2","prompt":""}`), time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("load the model on simulator %d: %s", i, fails)
		}
	}
	type tenantSystem struct {
		name         string
		url          string
		quiet, flood *http.Client
		idle         func() bool // nothing left in the queue
		ready        func() bool // every worker's record shows the model loaded
	}
	var systems []tenantSystem
	transport := newHTTPClient(4 * flooders).Transport
	fleetOf := func(name, title string, dispFlags ...string) error {
		d, err := l.startDispatcher(ctx, "tenants-"+name+"-dispatcher", append([]string{"--keys"}, dispFlags...)...)
		if err != nil {
			return err
		}
		ids := make([]string, len(sims))
		for i, sim := range sims {
			ids[i] = fmt.Sprintf("tenants-%s-%d", name, i)
			if _, err := l.startWorker(ctx, d, ids[i], sim, p.tenSlots); err != nil {
				return err
			}
		}
		kv, err := d.q.Keys(ctx)
		if err != nil {
			return err
		}
		store := apikey.NewStore(kv)
		sys := tenantSystem{name: title, url: d.url, idle: func() bool {
			n, err := d.queued(ctx)
			return err == nil && n == 0
		}, ready: func() bool {
			for _, id := range ids {
				n, err := d.node(ctx, id)
				if err != nil || n == nil || !n.IsLoaded("llama3.2:latest") {
					return false
				}
			}
			return true
		}}
		for _, who := range []string{"quiet", "flood"} {
			_, secret, err := store.Create(ctx, apikey.Key{Name: who, Tenant: who, Role: apikey.User}, time.Now())
			if err != nil {
				return fmt.Errorf("create key %s: %w", who, err)
			}
			c := &http.Client{Transport: &bearer{base: transport, secret: secret}}
			if err := waitUntil(ctx, d.proc, readyTimeout, "the dispatcher to accept key "+who, func() bool {
				return status(ctx, c, d.url+"/api/tags") == http.StatusOK
			}); err != nil {
				return err
			}
			if who == "quiet" {
				sys.quiet = c
			} else {
				sys.flood = c
			}
		}
		systems = append(systems, sys)
		return nil
	}
	if !l.hasFlag("dispatcher", "tenant-window") {
		s.notef("These binaries' dispatcher has no `--tenant-window`: tenant fairness was not measured.")
		if err := fleetOf("today", "OllamaMax, today's policy"); err != nil {
			return err
		}
	} else {
		if err := fleetOf("fair", "OllamaMax, tenant fairness"); err != nil {
			return err
		}
		if err := fleetOf("today", "OllamaMax, `--tenant-window 0`", "--tenant-window", "0"); err != nil {
			return err
		}
	}
	lcURL, err := l.leastConn(ctx, s, "tenants", sims)
	if err != nil {
		return err
	}
	if lcURL != "" {
		c := &http.Client{Transport: transport}
		systems = append(systems, tenantSystem{name: "nginx least_conn", url: lcURL, quiet: c, flood: c})
	}

	// wait is each quiet request's queue wait in seconds (+Inf when it
	// did not complete).
	wait := func(res []result) sample {
		v := make([]float64, len(res))
		for i, r := range res {
			v[i] = math.Inf(1)
			if r.ok() {
				v[i] = max(r.ttft-ttft, 0).Seconds()
			}
		}
		return newSample(v)
	}
	type row struct {
		idle, flooded sample
		floodRate     float64 // the flood's jobs answered per second while it ran
	}
	rows := make([]row, len(systems))
	quietBody := generateBody("llama3.2", "quiet warm-up", p.tenQuietTokens, true)
	floodBody := generateBody("llama3.2", "flood", p.tenFloodTokens, false)
	for k, sys := range systems {
		url := sys.url + "/api/generate"
		if sys.ready != nil {
			if err := waitUntil(ctx, nil, 15*time.Second, sys.name+"'s records to show the model loaded", sys.ready); err != nil {
				return err
			}
		}
		if _, fails := split([]result{do(ctx, sys.quiet, url, quietBody, time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("%s: warm-up: %s", sys.name, fails)
		}
		fmt.Fprintf(l.progress, "   %s: idle fleet, %d arrivals over %s\n", sys.name, len(arr), p.tenQuietDur)
		idle := openLoopClient(ctx, sys.quiet, url, "quiet idle", arr, p.tenQuietDur+p.tenDrain)
		if _, fails := split(idle); fails != "" {
			s.notef("%s, idle fleet: %s.", sys.name, fails)
		}
		// Active again just before the flood, as a tenant in the middle of
		// a conversation is.
		if _, fails := split([]result{do(ctx, sys.quiet, url, quietBody, time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("%s: warm-up: %s", sys.name, fails)
		}
		fmt.Fprintf(l.progress, "   %s: %d flooding, %d arrivals over %s\n", sys.name, flooders, len(arr), p.tenQuietDur)
		floodStart := time.Now()
		stop, done := flood(ctx, sys.flood, url, floodBody, flooders)
		select {
		case <-ctx.Done():
		case <-time.After(p.tenSettle): // The flood's requests all sent and its first jobs running.
		}
		flooded := openLoopClient(ctx, sys.quiet, url, "quiet flooded", arr, p.tenQuietDur+p.tenDrain)
		stop()
		rows[k] = row{idle: wait(idle), flooded: wait(flooded), floodRate: float64(done.Load()) / time.Since(floodStart).Seconds()}
		if _, fails := split(flooded); fails != "" {
			s.notef("%s, during the flood: %s.", sys.name, fails)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if sys.idle != nil {
			// The flood's canceled requests must not linger in the queue.
			if err := waitUntil(ctx, nil, 15*time.Second, "an empty job stream", sys.idle); err != nil {
				return err
			}
		}
	}
	t := table{caption: "Results: the quiet tenant's queue wait", header: []string{"system", "idle p50", "idle p99",
		"flooded p50", "flooded p99", "flooded p99 ÷ idle p99", "completed while flooded", "flood jobs/s"}}
	for k, sys := range systems {
		r := rows[k]
		t.rows = append(t.rows, []string{sys.name, ms(r.idle.p50()), ms(r.idle.p99()), ms(r.flooded.p50()), ms(r.flooded.p99()),
			ratio(r.idle.p99(), r.flooded.p99()), fmt.Sprintf("%d of %d", r.flooded.completed(), r.flooded.n()), fmt.Sprintf("%.1f", r.floodRate)})
	}
	s.addTable(t)
	for k, sys := range systems {
		if strings.Contains(sys.name, "fairness") {
			r := rows[k]
			s.notef("Done when the quiet tenant's p99 queue wait during the flood is at most 2× its p99 on the idle fleet: "+
				"with tenant fairness %s ÷ %s = %s.", ms(r.flooded.p99()), ms(r.idle.p99()), ratio(r.idle.p99(), r.flooded.p99()))
		}
	}
	s.notef("Each system's ratio is to its own idle fleet. Tenant fairness holds the flood's requests beyond its cap at the "+
		"dispatcher (the fleet's slots less the quiet tenant's reservation), so a slot is free when a quiet request comes; "+
		"without it the quiet request queues behind the flood's backlog, in JetStream or in each simulator's own queue. "+
		"\"flood jobs/s\" is the flood's answers per second while it ran, against the fleet's nominal %.1f/s: what the "+
		"slots kept free for the quiet tenant cost the flood.", float64(p.tenSims*p.tenSlots)/floodSvc.Seconds())
	return nil
}

// openLoopClient is openLoop with prompts of prefix ("<prefix> <i>").
func openLoopClient(ctx context.Context, c *http.Client, url, prefix string, arr []arrival, limit time.Duration) []result {
	return openLoopBodies(ctx, c, url, arr, limit, func(i int, a arrival) []byte {
		return generateBody("llama3.2", fmt.Sprintf("%s %d", prefix, i), a.tokens, true)
	})
}

// flood keeps n requests of body in flight, closed loop, until stop is
// called (which waits for them); done counts those answered in full.
func flood(ctx context.Context, c *http.Client, url string, body []byte, n int) (stop func(), done *atomic.Int64) {
	ctx, cancel := context.WithCancel(ctx)
	done = new(atomic.Int64)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				if r := do(ctx, c, url, body, time.Time{}, streamOpts{}); r.ok() {
					done.Add(1)
				} else if ctx.Err() == nil {
					select { // A refusal: try again shortly, as a client would.
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }, done
}
