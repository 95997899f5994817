package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// swapModels are the two models of the swap scenario; the first half of
// the simulators starts with the first loaded, the rest with the second.
var swapModels = [2]string{"llama3.2", "qwen3"}

// runSwap offers the same seeded Poisson arrivals, half for each of two
// models, at swapRate of the nominal capacity of simulators that hold one
// model at a time (--max-loaded-models 1, a load of swapLoad), to OllamaMax
// with warm-first scheduling, to OllamaMax with it off (--cold-after 0,
// the policy before it), and to nginx least_conn, and counts the model
// loads each causes.
func runSwap(ctx context.Context, l *lab, p params, s *section) error {
	mean := float64(p.swapTokens[0]+p.swapTokens[1]) / 2
	const ttft = 10 * time.Millisecond
	svc := ttft + time.Duration(mean/p.swapTPS*float64(time.Second))
	capacity := float64(p.swapSims*p.swapSlots) / svc.Seconds()
	lambda := p.swapRate * capacity
	arr := poissonArrivals(20260214, lambda, p.swapDur, p.swapTokens)
	rng := rand.New(rand.NewPCG(7, 11))
	models := make([]string, len(arr))
	for i := range models {
		models[i] = swapModels[rng.IntN(2)]
	}
	s.design = []string{fmt.Sprintf(
		"%d simulated Ollamas that each hold one model at a time (`--max-loaded-models 1`, a load takes %s, "+
			"`--parallel %d`, %g tokens/s per stream, %s to the first token): half start with %s loaded, half with %s. "+
			"Requests arrive open-loop as a Poisson process at %.0f%% of the fleet's nominal capacity (%.2f jobs/s, "+
			"counting no loads), for %s: %d streamed `/api/generate` requests of %d–%d tokens, each for either model "+
			"with equal chance. The same arrivals go to OllamaMax with warm-first scheduling (the worker's defaults: "+
			"`--cold-after 2s --cold-backlog 4`), to OllamaMax with it off (`--cold-after 0`: every worker takes any job "+
			"in arrival order, the policy before), and to nginx `least_conn` in front of the same simulators. Before "+
			"each system's run every simulator is set back to its starting model. Model loads are counted by polling "+
			"each simulator's `/api/ps` every 50 ms (a model that appears is a load). Latency runs from a request's "+
			"arrival time to its last token; a request not finished %s after the last arrival is canceled and counts "+
			"as not completed.",
		p.swapSims, p.swapLoad, p.swapSlots, p.swapTPS, ttft, swapModels[0], swapModels[1], p.swapRate*100, lambda,
		p.swapDur, len(arr), p.swapTokens[0], p.swapTokens[1], p.swapDrain)}

	sims := make([]*simProc, p.swapSims)
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("swap-sim%d", i), simOpts{models: strings.Join(swapModels[:], ","),
			tps: p.swapTPS, ttft: ttft, parallel: p.swapSlots, tokens: p.swapTokens[1], seed: int64(i + 1), maxQueue: 4096,
			extra: []string{"--max-loaded-models", "1", "--load", p.swapLoad.String()}}); err != nil {
			return err
		}
	}
	start := func(i int) string { return swapModels[i*2/len(sims)] }

	type swapSystem struct {
		name  string
		url   string
		ready func() bool // the workers' records show the starting models
		idle  func() bool // no job left in the queue
	}
	var systems []swapSystem
	wait := (p.swapDur + p.swapDrain + time.Minute).Round(time.Second)
	fleetOf := func(name string, workerFlags ...string) error {
		d, err := l.startDispatcher(ctx, "swap-"+name+"-dispatcher", "--queue-wait", wait.String())
		if err != nil {
			return err
		}
		ids := make([]string, len(sims))
		for i, sim := range sims {
			ids[i] = fmt.Sprintf("swap-%s-%d", name, i)
			if _, err := l.startWorker(ctx, d, ids[i], sim, p.swapSlots, workerFlags...); err != nil {
				return err
			}
		}
		title := "OllamaMax, warm first"
		if len(workerFlags) > 0 {
			title = "OllamaMax, today's policy"
		}
		systems = append(systems, swapSystem{name: title, url: d.url, ready: func() bool {
			for i, id := range ids {
				m, _ := job.CanonicalModel(start(i))
				n, err := d.node(ctx, id)
				if err != nil || n == nil || !n.IsLoaded(m) {
					return false
				}
			}
			return true
		}, idle: func() bool {
			n, err := d.queued(ctx)
			return err == nil && n == 0
		}})
		return nil
	}
	if !l.hasFlag("worker", "cold-after") {
		s.notef("These binaries' worker has no `--cold-after`: warm-first scheduling was not measured.")
		if err := fleetOf("today"); err != nil {
			return err
		}
		systems[0].name = "OllamaMax, today's policy"
	} else {
		if err := fleetOf("warm"); err != nil {
			return err
		}
		if err := fleetOf("today", "--cold-after", "0"); err != nil {
			return err
		}
	}
	lcURL, err := l.leastConn(ctx, s, "swap", sims)
	if err != nil {
		return err
	}
	if lcURL != "" {
		systems = append(systems, swapSystem{name: "nginx least_conn", url: lcURL})
	}

	c := newHTTPClient(256)
	t := table{caption: "Results", header: []string{"system", "completed", "model loads", "loads ÷ today's",
		"latency p50", "latency p99", "p99 ÷ today's", "TTFT p50", "TTFT p99"}}
	type row struct {
		loads    int
		lat, ttf sample
	}
	rows := make([]row, len(systems))
	today := -1
	for k, sys := range systems {
		if strings.Contains(sys.name, "today") {
			today = k
		}
		// Every simulator back to its starting model, which evicts the other.
		for i, sim := range sims {
			if _, fails := split([]result{do(ctx, c, sim.url+"/api/generate",
				[]byte(fmt.Sprintf(`{"model":%q,"prompt":""}`, start(i))), time.Time{}, streamOpts{})}); fails != "" {
				return fmt.Errorf("load %s on simulator %d: %s", start(i), i, fails)
			}
		}
		if sys.ready != nil {
			if err := waitUntil(ctx, nil, 10*time.Second, sys.name+"'s records to show the starting models", sys.ready); err != nil {
				return err
			}
		}
		fmt.Fprintf(l.progress, "   %s: %d arrivals over %s\n", sys.name, len(arr), p.swapDur)
		counted := countLoads(ctx, c, sims)
		res := openLoopModels(ctx, c, sys.url+"/api/generate", arr, models, p.swapDur+p.swapDrain)
		loads := counted()
		if err := ctx.Err(); err != nil {
			return err
		}
		lat, ttf := make([]float64, len(res)), make([]float64, len(res))
		for i, r := range res {
			lat[i], ttf[i] = math.Inf(1), math.Inf(1)
			if r.ok() {
				lat[i] = r.total.Seconds()
			}
			if !r.first.IsZero() && r.status == http.StatusOK {
				ttf[i] = r.ttft.Seconds()
			}
		}
		rows[k] = row{loads: loads, lat: newSample(lat), ttf: newSample(ttf)}
		if _, fails := split(res); fails != "" {
			s.notef("%s: %s.", sys.name, fails)
		}
		if rows[k].lat.completed() < rows[k].lat.n() && sys.idle != nil {
			// Canceled requests must not linger in the queue.
			if err := waitUntil(ctx, nil, 10*time.Second, "an empty job stream", sys.idle); err != nil {
				return err
			}
		}
	}
	for k, sys := range systems {
		r := rows[k]
		loadRatio, p99Ratio := "—", "—"
		if today >= 0 && k != today {
			loadRatio = fmt.Sprintf("%.2f", float64(r.loads)/math.Max(float64(rows[today].loads), 1))
			p99Ratio = ratio(rows[today].lat.p99(), r.lat.p99())
		}
		t.rows = append(t.rows, []string{sys.name, fmt.Sprintf("%d of %d", r.lat.completed(), r.lat.n()), fmt.Sprint(r.loads),
			loadRatio, secs(r.lat.p50()), secs(r.lat.p99()), p99Ratio, secs(r.ttf.p50()), secs(r.ttf.p99())})
	}
	s.addTable(t)
	s.notef("\"÷ today's\": the system's figure divided by OllamaMax's with warm-first off. A model load costs %s here; "+
		"the nominal capacity counts none, so a policy that swaps models often offers the fleet more work than it can do.", p.swapLoad)
	return nil
}

// openLoopModels is openLoop with a model per arrival.
func openLoopModels(ctx context.Context, c *http.Client, url string, arr []arrival, models []string, limit time.Duration) []result {
	return openLoopBodies(ctx, c, url, arr, limit, func(i int, a arrival) []byte {
		return generateBody(models[i], fmt.Sprintf("job %d", i), a.tokens, true)
	})
}

// psModels returns the names /api/ps of sim lists.
func psModels(ctx context.Context, c *http.Client, sim *simProc) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sim.url+"/api/ps", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var ps struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range ps.Models {
		out[m.Name] = true
	}
	return out, nil
}

// countLoads polls every simulator's /api/ps every 50 ms and counts the
// models that appear; the returned function stops it and returns the count.
// A load shows for at least the load's request's answer, far longer than
// the poll interval, so none is missed.
func countLoads(ctx context.Context, c *http.Client, sims []*simProc) func() int {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	loads := 0
	var wg sync.WaitGroup
	for _, sim := range sims {
		prev, _ := psModels(ctx, c, sim)
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				now, err := psModels(ctx, c, sim)
				if err != nil {
					continue
				}
				n := 0
				for m := range now {
					if !prev[m] {
						n++
					}
				}
				prev = now
				mu.Lock()
				loads += n
				mu.Unlock()
			}
		})
	}
	return func() int {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return loads
	}
}
