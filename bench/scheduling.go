package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// arrival is one request of the open-loop schedule.
type arrival struct {
	at     time.Duration // after the start of the run
	tokens int           // num_predict
}

// poissonArrivals draws a seeded Poisson process of rate lambda (per second)
// over dur, conditioned on its expected count: round(lambda × dur) arrival
// times drawn uniformly and sorted, which is how a Poisson process's times
// are distributed given their number. So the offered load is what was asked
// for, while the gaps stay exponential. Each request gets a uniform answer
// length in tokens.
func poissonArrivals(seed uint64, lambda float64, dur time.Duration, tokens [2]int) []arrival {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := int(math.Round(lambda * dur.Seconds()))
	out := make([]arrival, n)
	for i := range out {
		out[i].at = time.Duration(rng.Float64() * float64(dur))
	}
	slices.SortFunc(out, func(a, b arrival) int { return cmp.Compare(a.at, b.at) })
	for i := range out {
		out[i].tokens = tokens[0] + rng.IntN(tokens[1]-tokens[0]+1)
	}
	return out
}

// openLoop sends each arrival at its time, whatever happened to the ones
// before, and waits for them until limit after the start; requests still
// running then are canceled and count as not completed. Latency counts from
// the arrival's due time.
func openLoop(ctx context.Context, c *http.Client, url string, arr []arrival, limit time.Duration) []result {
	return openLoopBodies(ctx, c, url, arr, limit, func(i int, a arrival) []byte {
		return generateBody("llama3.2", fmt.Sprintf("job %d", i), a.tokens, true)
	})
}

// openLoopBodies is openLoop with the body of each arrival from body.
func openLoopBodies(ctx context.Context, c *http.Client, url string, arr []arrival, limit time.Duration, body func(int, arrival) []byte) []result {
	t0 := time.Now().Add(20 * time.Millisecond)
	ctx, cancel := context.WithDeadline(ctx, t0.Add(limit))
	defer cancel()
	out := make([]result, len(arr))
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, a := range arr {
		due := t0.Add(a.at)
		timer := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			timer.Stop()
			return out
		case <-timer.C:
		}
		b := body(i, a)
		wg.Go(func() { out[i] = do(ctx, c, url, b, due, streamOpts{}) })
	}
	return out
}

// system is one way of spreading the requests over the fleet.
type system struct {
	name   string
	url    string
	color  string
	served func(skip int) ([]int, error) // requests per simulator, counted as the table note says
	lines  func() int                    // access log lines so far, for served's skip
}

// runScheduling offers the same seeded Poisson arrivals at ~85% of a mixed
// fleet's capacity to OllamaMax and to nginx (round-robin and least_conn)
// in front of the same three simulators.
func runScheduling(ctx context.Context, l *lab, p params, s *section) error {
	mean := float64(p.schedTokens[0]+p.schedTokens[1]) / 2
	var capacity float64
	fleetTable := table{caption: "The fleet", header: []string{"simulator", "tokens/s per stream", "time to first token", "slots", "mean service time", "capacity (jobs/s)"}}
	for _, f := range p.schedFleet {
		svc := f.service(mean)
		capacity += float64(f.slots) / svc.Seconds()
		fleetTable.rows = append(fleetTable.rows, []string{f.name, fmt.Sprintf("%g", f.tps), f.ttft.String(), fmt.Sprint(f.slots),
			svc.Round(time.Millisecond).String(), fmt.Sprintf("%.2f", float64(f.slots)/svc.Seconds())})
	}
	lambda := p.schedLoad * capacity
	arr := poissonArrivals(p.schedSeed, lambda, p.schedDur, p.schedTokens)
	s.design = []string{fmt.Sprintf(
		"Three simulated Ollamas of different speeds and slot counts (below). Requests arrive open-loop as a Poisson "+
			"process (seed %d, conditioned on its count) at %.0f%% of the fleet's nominal capacity, %.2f jobs/s, for %s: "+
			"%d streamed `/api/generate` "+
			"requests with answers of %d–%d tokens (uniform). The same arrivals go to OllamaMax (dispatcher + one worker "+
			"per simulator, `--slots` = the simulator's `--parallel`) and to nginx in front of the same simulators, with "+
			"round-robin and with `least_conn` (one nginx process, generated configuration, `proxy_buffering off`, "+
			"keep-alive upstreams). The simulators queue requests beyond their slots as Ollama does. Latency runs from "+
			"the request's arrival time to its last token; a request not finished %s after the last arrival is canceled "+
			"and counts as not completed (an infinite latency in the percentiles).",
		p.schedSeed, p.schedLoad*100, lambda, p.schedDur, len(arr), p.schedTokens[0], p.schedTokens[1], p.schedDrain)}
	s.addTable(fleetTable)

	sims := make([]*simProc, len(p.schedFleet))
	for i, f := range p.schedFleet {
		var err error
		if sims[i], err = l.startSim(ctx, "sched-"+f.name, simOpts{models: "llama3.2", tps: f.tps, ttft: f.ttft,
			parallel: f.slots, tokens: p.schedTokens[1], seed: int64(i + 1)}); err != nil {
			return err
		}
	}
	wait := (p.schedDur + p.schedDrain + time.Minute).Round(time.Second)
	d, err := l.startDispatcher(ctx, "sched-dispatcher", "--queue-wait", wait.String())
	if err != nil {
		return err
	}
	ids := make([]string, len(sims))
	for i, f := range p.schedFleet {
		ids[i] = "sched-" + f.name
		if _, err := l.startWorker(ctx, d, ids[i], sims[i], f.slots); err != nil {
			return err
		}
	}
	systems := []system{{name: "OllamaMax", url: d.url, color: "#1f77b4", served: func(int) ([]int, error) {
		out := make([]int, len(ids))
		for i, id := range ids {
			n, err := d.node(ctx, id)
			if err != nil || n == nil {
				return nil, fmt.Errorf("node record of %s: %v", id, err)
			}
			out[i] = int(n.JobsDone)
		}
		return out, nil
	}}}
	if l.nginx == "" {
		s.notef("nginx was not available (not installed, or `-nginx off`): the nginx baselines were skipped (`apt-get install nginx-light`).")
	} else {
		addrs := make([]string, len(sims))
		for i, sim := range sims {
			addrs[i] = sim.addr
		}
		rr := &nginxServer{Name: "round_robin", Upstreams: addrs}
		lc := &nginxServer{Name: "least_conn", Balance: "least_conn", Upstreams: addrs}
		if _, err := l.startNginx(ctx, "sched-nginx", rr, lc); err != nil {
			return err
		}
		for _, x := range []struct {
			srv   *nginxServer
			name  string
			color string
		}{{rr, "nginx round-robin", "#d62728"}, {lc, "nginx least_conn", "#ff7f0e"}} {
			systems = append(systems, system{name: x.name, url: "http://" + x.srv.Addr, color: x.color,
				served: func(skip int) ([]int, error) {
					counts, _, err := upstreamCounts(x.srv, skip)
					if err != nil {
						return nil, err
					}
					out := make([]int, len(addrs))
					for i, a := range addrs {
						out[i] = counts[a]
					}
					return out, nil
				},
				lines: func() int { _, n, _ := upstreamCounts(x.srv, 0); return n }})
		}
	}

	c := newHTTPClient(256)
	names := make([]string, len(p.schedFleet))
	for i, f := range p.schedFleet {
		names[i] = f.name
	}
	t := table{caption: "Results", header: []string{"system", "completed", "latency p50", "latency p99", "TTFT p50", "TTFT p99",
		"p99 ÷ OllamaMax's", "served by " + strings.Join(names, " / ")}}
	var omxP99 float64
	fig := &schedulingFigures{Load: p.schedLoad, Simulators: len(p.schedFleet), Requests: len(arr)}
	for k, sys := range systems {
		if _, fails := split([]result{do(ctx, c, sys.url+"/api/generate", generateBody("llama3.2", "warm-up", 1, true), time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("warm-up of %s: %s", sys.name, fails)
		}
		skip, before := 0, []int(nil)
		if sys.lines != nil {
			skip = sys.lines()
		} else if before, err = sys.served(0); err != nil {
			return err
		}
		fmt.Fprintf(l.progress, "   %s: %d arrivals over %s\n", sys.name, len(arr), p.schedDur)
		res := openLoop(ctx, c, sys.url+"/api/generate", arr, p.schedDur+p.schedDrain)
		if err := ctx.Err(); err != nil {
			return err
		}
		lat, ttft := make([]float64, len(res)), make([]float64, len(res))
		for i, r := range res {
			lat[i], ttft[i] = math.Inf(1), math.Inf(1)
			if r.ok() {
				lat[i] = r.total.Seconds()
			}
			if !r.first.IsZero() && r.status == http.StatusOK {
				ttft[i] = r.ttft.Seconds()
			}
		}
		ls, ts := newSample(lat), newSample(ttft)
		if k == 0 {
			omxP99 = ls.p99()
		}
		cmp := "—"
		if k > 0 {
			cmp = ratio(omxP99, ls.p99())
		}
		servedCell := "—"
		counts, err := sys.served(skip)
		if before != nil {
			// Node records lag job ends by up to half a second: wait until
			// they account for every completed job.
			_ = waitUntil(ctx, nil, 3*time.Second, "node records", func() bool {
				c, err := sys.served(0)
				if err != nil {
					return false
				}
				n := 0
				for i := range c {
					n += c[i] - before[i]
				}
				counts = c
				return n >= ls.completed()
			}) // On timeout, the counts so far are what the records say.
		}
		if err == nil {
			parts := make([]string, len(counts))
			for i := range counts {
				if before != nil {
					counts[i] -= before[i]
				}
				parts[i] = fmt.Sprint(counts[i])
			}
			servedCell = strings.Join(parts, " / ")
		} else {
			s.notef("%s: could not count requests per simulator: %v", sys.name, err)
		}
		t.rows = append(t.rows, []string{sys.name, fmt.Sprintf("%d of %d", ls.completed(), ls.n()),
			secs(ls.p50()), secs(ls.p99()), secs(ts.p50()), secs(ts.p99()), cmp, servedCell})
		s.plot = append(s.plot, series{name: sys.name, color: sys.color, values: ls.finite(), total: ls.n()})
		fig.Systems = append(fig.Systems, schedulingSystem{Name: sys.name, Completed: ls.completed(), P99: orInf(ls.p99())})
		if _, fails := split(res); fails != "" {
			s.notef("%s: %s.", sys.name, fails)
		}
		if ls.completed() < ls.n() {
			// Canceled requests must not linger in the queue or the simulators.
			if err := waitUntil(ctx, nil, 10*time.Second, "an empty job stream", func() bool {
				n, err := d.queued(ctx)
				return err == nil && n == 0
			}); err != nil {
				return err
			}
			time.Sleep(time.Second)
		}
	}
	s.addTable(t)
	s.figures.Scheduling = fig
	s.notef("\"served by\": for OllamaMax, the jobs each worker completed (`jobs_done` in its node record); for nginx, " +
		"the requests it sent to each simulator (its access log), completed or not.")
	s.plotTitle = fmt.Sprintf("Mixed fleet at %.0f%% of capacity: %d Poisson arrivals over %s", p.schedLoad*100, len(arr), p.schedDur)
	return nil
}
