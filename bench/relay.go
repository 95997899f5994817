package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runRelay measures tokens per second delivered to many concurrent stream
// clients, directly from a simulator and relayed through OllamaMax, with the
// CPU the dispatcher and worker spend per relayed token.
func runRelay(ctx context.Context, l *lab, p params, s *section) error {
	n := p.relayStreams
	modes := []struct {
		name  string
		model string
		opts  simOpts
	}{
		{fmt.Sprintf("paced, %g tokens/s per stream", p.relayTPS), "llama3.2",
			simOpts{models: "llama3.2", tps: p.relayTPS, ttft: 20 * time.Millisecond, parallel: n, tokens: p.relayTokens, seed: 1}},
		{"unpaced (as fast as it goes)", "llama3.2:1b",
			simOpts{models: "llama3.2:1b", tps: -1, ttft: -time.Millisecond, parallel: n, tokens: p.relayMaxTokens, seed: 1}},
	}
	s.design = []string{fmt.Sprintf(
		"%d clients each stream `/api/generate` back to back for %s per round, %d rounds, directly from the simulator and "+
			"through OllamaMax, alternating; tokens are the NDJSON lines that reached the clients within the window. Two "+
			"simulators: one paced like a fast GPU (`--tps %g`, %d tokens per answer; the nominal rate is %d × %g = %.0f "+
			"tokens/s), one unpaced (`--tps -1`, %d tokens per answer) to find the relay's ceiling. Each has its own worker "+
			"(`--slots %d`) on one dispatcher. CPU is utime+stime from /proc/<pid>/stat over the same windows "+
			"(10 ms resolution), divided by the tokens delivered.",
		n, p.relayWindow, p.relayRounds, p.relayTPS, p.relayTokens, n, p.relayTPS, float64(n)*p.relayTPS, p.relayMaxTokens, n)}

	d, err := l.startDispatcher(ctx, "relay-dispatcher")
	if err != nil {
		return err
	}
	c := newHTTPClient(2 * n)
	t := table{header: []string{"simulator", "direct tokens/s", "OllamaMax tokens/s", "ratio",
		"relay CPU µs/token (dispatcher + worker)", "dispatcher", "worker", "relay CPU (cores)", "simulator CPU µs/token (direct)"}}
	var paced *relayFigures
	for i, m := range modes {
		sim, err := l.startSim(ctx, "relay-sim"+strconv.Itoa(i), m.opts)
		if err != nil {
			return err
		}
		w, err := l.startWorker(ctx, d, "relay-w"+strconv.Itoa(i), sim, n)
		if err != nil {
			return err
		}
		pids := map[string]int{"dispatcher": d.pid(), "worker": w.pid(), "sim": sim.pid()}
		direct, via := sim.url+"/api/generate", d.url+"/api/generate"
		warm := func(i int) []byte { return generateBody(m.model, "warm-up", 2, true) }
		for _, url := range []string{direct, via} {
			if _, fails := split(closedLoop(ctx, c, url, n, 1, warm)); fails != "" {
				return fmt.Errorf("warm-up of %s: %s", url, fails)
			}
		}
		var dw, vw window
		for round := range p.relayRounds {
			fmt.Fprintf(l.progress, "   %s, round %d\n", m.name, round+1)
			r, err := tokenWindow(ctx, c, direct, m.model, n, p.relayWindow, pids)
			if err != nil {
				return err
			}
			dw.add(r)
			if r, err = tokenWindow(ctx, c, via, m.model, n, p.relayWindow, pids); err != nil {
				return err
			}
			vw.add(r)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, x := range []struct {
			path string
			w    window
		}{{"direct", dw}, {"through OllamaMax", vw}} {
			if x.w.failed > 0 {
				s.notef("%s, %s: %d streams ended without their done line before the window closed (first: %s).",
					m.name, x.path, x.w.failed, x.w.firstFailure)
			}
		}
		perToken := func(w window, who string) float64 {
			return float64(w.cpu[who].Microseconds()) / float64(max(w.tokens, 1))
		}
		relayCPU := vw.cpu["dispatcher"] + vw.cpu["worker"]
		cpuPerToken := float64(relayCPU.Microseconds()) / float64(max(vw.tokens, 1))
		if i == 0 { // paced
			paced = &relayFigures{Streams: n, PerStream: p.relayTPS, Direct: dw.rate(), OllamaMax: vw.rate(), CPUPerToken: cpuPerToken}
		}
		t.rows = append(t.rows, []string{m.name,
			rate(dw.rate()), rate(vw.rate()), fmt.Sprintf("%.2f", vw.rate()/dw.rate()),
			fmt.Sprintf("%.1f", cpuPerToken),
			fmt.Sprintf("%.1f", perToken(vw, "dispatcher")), fmt.Sprintf("%.1f", perToken(vw, "worker")),
			fmt.Sprintf("%.2f", relayCPU.Seconds()/vw.elapsed.Seconds()),
			fmt.Sprintf("%.1f", perToken(dw, "sim"))})
	}
	s.addTable(t)
	s.figures.Relay = paced
	return nil
}

// window is what one or more measurement windows delivered.
type window struct {
	tokens       int64
	elapsed      time.Duration
	cpu          map[string]time.Duration // CPU time used by each process during the windows
	failed       int
	firstFailure string
}

func (w *window) add(o window) {
	w.tokens += o.tokens
	w.elapsed += o.elapsed
	if w.cpu == nil {
		w.cpu = map[string]time.Duration{}
	}
	for k, v := range o.cpu {
		w.cpu[k] += v
	}
	if w.failed == 0 {
		w.firstFailure = o.firstFailure
	}
	w.failed += o.failed
}

func (w window) rate() float64 { return float64(w.tokens) / w.elapsed.Seconds() }

// tokenWindow runs streams clients that stream from url back to back for d,
// counts the token lines that arrive within d, and reads the CPU time of
// pids at both ends of the window. Streams still running at the end are
// canceled.
func tokenWindow(ctx context.Context, c *http.Client, url, model string, streams int, d time.Duration, pids map[string]int) (window, error) {
	w := window{cpu: map[string]time.Duration{}}
	before, err := cpuTimes(pids)
	if err != nil {
		return w, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	var after map[string]time.Duration
	var afterErr error
	var elapsed time.Duration
	stopped := make(chan struct{}) // closed once after, afterErr and elapsed are set
	timer := time.AfterFunc(d, func() {
		after, afterErr = cpuTimes(pids)
		elapsed = time.Since(start)
		cancel()
		close(stopped)
	})
	defer timer.Stop()

	var tokens atomic.Int64
	count := func(t time.Time) {
		if t.Before(end) {
			tokens.Add(1)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			for k := 0; wctx.Err() == nil; k++ {
				body := generateBody(model, fmt.Sprintf("relay %d.%d", i, k), 0, true)
				r := do(wctx, c, url, body, time.Time{}, streamOpts{onLine: count})
				if !r.ok() && wctx.Err() == nil {
					mu.Lock()
					if w.failed == 0 {
						w.firstFailure = r.outcome()
					}
					w.failed++
					mu.Unlock()
					time.Sleep(10 * time.Millisecond) // No hot loop against a failing path.
				}
			}
		})
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		wg.Wait()
		return window{}, ctx.Err()
	}
	wg.Wait()
	w.elapsed = elapsed
	if afterErr != nil {
		return w, afterErr
	}
	for k := range pids {
		w.cpu[k] = after[k] - before[k]
	}
	w.tokens = tokens.Load()
	// Let canceled jobs wind down before the next window measures CPU.
	time.Sleep(300 * time.Millisecond)
	return w, nil
}

// cpuTimes reads the CPU time of each process.
func cpuTimes(pids map[string]int) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(pids))
	for k, pid := range pids {
		t, err := cpuTime(pid)
		if err != nil {
			return nil, fmt.Errorf("cpu time of %s: %w", k, err)
		}
		out[k] = t
	}
	return out, nil
}
