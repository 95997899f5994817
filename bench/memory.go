package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// runMemory holds many slow streams open at once through OllamaMax and reads
// the resident memory of the dispatcher and the worker; nginx proxying the
// same streams to the same simulator is the reference.
func runMemory(ctx context.Context, l *lab, p params, s *section) error {
	n := p.memStreams
	sim, err := l.startSim(ctx, "mem-sim", simOpts{models: "llama3.2", tps: p.memTPS, ttft: 20 * time.Millisecond,
		parallel: n, tokens: p.memTokens, seed: 1, maxQueue: n})
	if err != nil {
		return err
	}
	// All n requests come at once: the per-model bound on waiting jobs
	// (--max-queued, 512) is not what this scenario measures.
	d, err := l.startDispatcher(ctx, "mem-dispatcher", "--max-queued", "0")
	if err != nil {
		return err
	}
	// One worker with a slot per stream, if such a worker serves at all;
	// else as few workers as serve, each with the slots that work.
	pids := map[string]int{"dispatcher": d.pid()}
	k, slots := 1, n
	w, err := l.startWorker(ctx, d, "mem-w0", sim, n)
	if err != nil {
		return err
	}
	workerKeys := []string{"mem-w0"}
	pids["mem-w0"] = w.pid()
	if !serves(ctx, d.url+"/api/generate", 10*time.Second) {
		w.stop(5 * time.Second)
		delete(pids, "mem-w0")
		s.notef("A worker with `--slots %d` did not answer a single request within 10 s, so the streams were spread "+
			"over workers with `--slots %d`.", n, p.memWorkerSlots)
		k = (n + p.memWorkerSlots - 1) / p.memWorkerSlots
		slots = (n + k - 1) / k
		workerKeys = nil
		for i := range k {
			id := fmt.Sprintf("mem-w%d", i+1)
			w, err := l.startWorker(ctx, d, id, sim, slots)
			if err != nil {
				return err
			}
			pids[id] = w.pid()
			workerKeys = append(workerKeys, id)
		}
	}
	s.design = []string{fmt.Sprintf(
		"%d streams are opened at once and held: answers of %d tokens at %g tokens/s (%s each) from one simulator with "+
			"`--parallel %d`, through one dispatcher (which embeds the NATS server; `--max-queued 0`, since all requests come at once) and %d worker(s) with `--slots %d`. "+
			"Once every stream has received its first token, VmRSS of each process is read from /proc/<pid>/status three "+
			"times, 200 ms apart (the highest is reported), then the streams are canceled. \"Idle\" is VmRSS after a few "+
			"warm-up requests. For reference, the same streams go through nginx (one process) to the same simulator.",
		n, p.memTokens, p.memTPS, time.Duration(float64(p.memTokens)/p.memTPS*float64(time.Second)), n, k, slots)}

	c := newHTTPClient(n + 16)
	t := table{header: []string{"process", "idle RSS", fmt.Sprintf("RSS at %d streams", n), "per stream", "peak RSS (VmHWM)", "streams open when read"}}

	fmt.Fprintf(l.progress, "   %d streams through OllamaMax\n", n)
	omx, err := holdStreams(ctx, c, d.url+"/api/generate", n, pids)
	if err != nil {
		return err
	}
	t.rows = append(t.rows, omx.row("dispatcher", "dispatcher", n))
	workers := omx.sum("workers", workerKeys...)
	label := "worker"
	if k > 1 {
		label = fmt.Sprintf("%d workers together", k)
	}
	t.rows = append(t.rows, workers.row(label, "workers", n))
	total := omx.sum("total", append([]string{"dispatcher"}, workerKeys...)...)
	t.rows = append(t.rows, total.row("dispatcher + worker"+map[bool]string{true: "s", false: ""}[k > 1], "total", n))
	fig := &memoryFigures{Streams: n, Workers: k, PerStream: total.m["total"].perStream(n) / 1024}
	if omx.open < n {
		s.notef("Only %d of %d streams through OllamaMax were open at once when memory was read (%s).", omx.open, n, omx.failures)
	}

	if l.nginx == "" {
		s.notef("nginx was not available (not installed, or `-nginx off`): the nginx reference was skipped (`apt-get install nginx-light`).")
	} else {
		srv := &nginxServer{Name: "mem", Upstreams: []string{sim.addr}}
		ng, err := l.startNginx(ctx, "mem-nginx", srv)
		if err != nil {
			return err
		}
		fmt.Fprintf(l.progress, "   %d streams through nginx\n", n)
		ref, err := holdStreams(ctx, c, "http://"+srv.Addr+"/api/generate", n, map[string]int{"nginx": ng.pid()})
		if err != nil {
			return err
		}
		t.rows = append(t.rows, ref.row("nginx (reference)", "nginx", n))
		if ref.open < n {
			s.notef("Only %d of %d streams through nginx were open at once when memory was read (%s).", ref.open, n, ref.failures)
		}
		if a, b := total.m["total"].perStream(n), ref.m["nginx"].perStream(n); b > 0 {
			s.notef("Per stream, OllamaMax's processes hold %.1f× the memory nginx holds.", a/b)
		}
		fig.Nginx = new(ref.m["nginx"].perStream(n) / 1024)
	}
	s.addTable(t)
	s.figures.Memory = fig
	return nil
}

// serves reports whether one short request through url completes within limit.
func serves(ctx context.Context, url string, limit time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	r := do(ctx, http.DefaultClient, url, generateBody("llama3.2", "probe", 1, true), time.Time{}, streamOpts{})
	return r.ok()
}

// rss is one process's memory before and during the streams.
type rss struct {
	idle, loaded, peak int64
}

func (r rss) perStream(n int) float64 { return float64(r.loaded-r.idle) / float64(n) }

// held is what holdStreams read.
type held struct {
	m        map[string]rss
	open     int    // streams open (first token in, not ended) when read
	failures string // how streams that ended early ended
}

// row is the table row of process key, labeled label.
func (h held) row(label, key string, n int) []string {
	r := h.m[key]
	return []string{label, mib(r.idle), mib(r.loaded), fmt.Sprintf("%.1f KiB", r.perStream(n)/1024), mib(r.peak), fmt.Sprint(h.open)}
}

// sum adds up processes into one row.
func (h held) sum(name string, keys ...string) held {
	var t rss
	for _, k := range keys {
		t.idle += h.m[k].idle
		t.loaded += h.m[k].loaded
		t.peak += h.m[k].peak
	}
	return held{m: map[string]rss{name: t}, open: h.open}
}

// holdStreams warms url up, reads the idle memory of pids, opens n streams,
// waits until all have their first token (up to a minute), reads memory,
// and cancels the streams.
func holdStreams(ctx context.Context, c *http.Client, url string, n int, pids map[string]int) (held, error) {
	h := held{m: map[string]rss{}}
	if _, fails := split(closedLoop(ctx, c, url, 4, 2, func(int) []byte { return generateBody("llama3.2", "warm-up", 2, true) })); fails != "" {
		return h, fmt.Errorf("warm-up of %s: %s", url, fails)
	}
	time.Sleep(500 * time.Millisecond)
	for k, pid := range pids {
		r, _, err := memory(pid)
		if err != nil {
			return h, err
		}
		h.m[k] = rss{idle: r}
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var open atomic.Int64
	var mu sync.Mutex
	var ended []result
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		wg.Go(func() {
			var seen bool
			r := do(sctx, c, url, generateBody("llama3.2", fmt.Sprintf("memory %d", i), 0, true), time.Time{},
				streamOpts{onLine: func(time.Time) {
					if !seen {
						seen = true
						open.Add(1)
					}
				}})
			if seen {
				open.Add(-1)
			}
			if sctx.Err() == nil {
				mu.Lock()
				ended = append(ended, r)
				mu.Unlock()
			}
		})
	}
	err := waitUntil(ctx, nil, time.Minute, fmt.Sprintf("%d open streams", n), func() bool { return open.Load() >= int64(n) })
	if err != nil && ctx.Err() != nil {
		return h, err
	}
	// Read even if not every stream opened: the table says how many were.
	h.open = int(open.Load())
	for range 3 {
		for k, pid := range pids {
			r, hwm, err := memory(pid)
			if err != nil {
				return h, err
			}
			m := h.m[k]
			m.loaded, m.peak = max(m.loaded, r), hwm
			h.m[k] = m
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	_, h.failures = split(ended)
	mu.Unlock()
	return h, nil
}
