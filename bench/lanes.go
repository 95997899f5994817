package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

// runLanes measures interactive latency while a batch of lanesLines lines
// runs: the same seeded Poisson arrivals of interactive requests go to each
// system once on an idle fleet and once while the batch runs. The systems
// are OllamaMax with the worker's interactive reserve (its default), with
// --interactive-reserve 0 (the policy before: a batch takes every slot),
// and nginx least_conn in front of the same simulators, to which the batch
// lines go as concurrent requests, as many at once as the fleet has slots.
func runLanes(ctx context.Context, l *lab, p params, s *section) error {
	const ttft = 5 * time.Millisecond
	svc := func(tokens int) time.Duration {
		return ttft + time.Duration(float64(tokens)/p.lanesTPS*float64(time.Second))
	}
	slots := p.lanesSims * p.lanesSlots
	arr := poissonArrivals(20261201, p.lanesRate, p.lanesDur, [2]int{p.lanesTokens, p.lanesTokens})
	s.design = []string{fmt.Sprintf(
		"%d simulated Ollamas (`--parallel %d`, %g tokens/s per stream, %s to the first token). A batch of %d lines "+
			"(`/api/generate`, %d tokens each, about %s of service) and interactive requests arriving open-loop as a "+
			"Poisson process at %g/s for %s (%d streamed `/api/generate` requests of %d tokens, about %s of service). "+
			"Each system gets the same arrivals twice: on an idle fleet, then while the batch runs (the arrivals start "+
			"once every line is queued, for OllamaMax, or once every connection is busy, for nginx). OllamaMax "+
			"(dispatcher + one worker per simulator, `--slots %d`) gets the batch through `pkg/batch`, as "+
			"`ollamaq batch submit` sends it, with the worker's interactive reserve (`--interactive-reserve 1`, the "+
			"default) and without it (`--interactive-reserve 0`, the policy before); nginx `least_conn` in front of the "+
			"same simulators gets each line as a request, %d at once (the fleet's slots). Latency runs from an "+
			"arrival's due time to its last token; the batch's time runs from its first line sent to its last result.",
		p.lanesSims, p.lanesSlots, p.lanesTPS, ttft, p.lanesLines, p.lanesBatchTokens, svc(p.lanesBatchTokens),
		p.lanesRate, p.lanesDur, len(arr), p.lanesTokens, svc(p.lanesTokens), p.lanesSlots, slots)}

	sims := make([]*simProc, p.lanesSims)
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("lanes-sim%d", i), simOpts{models: "llama3.2", tps: p.lanesTPS, ttft: ttft,
			parallel: p.lanesSlots, tokens: p.lanesTokens, seed: int64(i + 1), maxQueue: 4096}); err != nil {
			return err
		}
	}
	type lanesSystem struct {
		name  string
		url   string
		batch func(ctx context.Context, started chan<- struct{}) (int, error) // runs the batch; the lines done
	}
	var systems []lanesSystem
	wait := (p.lanesBatchLimit + p.lanesDur + time.Minute).Round(time.Second)
	fleetOf := func(name, title string, workerFlags ...string) error {
		d, err := l.startDispatcher(ctx, "lanes-"+name+"-dispatcher", "--queue-wait", wait.String())
		if err != nil {
			return err
		}
		for i, sim := range sims {
			if _, err := l.startWorker(ctx, d, fmt.Sprintf("lanes-%s-%d", name, i), sim, p.lanesSlots, workerFlags...); err != nil {
				return err
			}
		}
		systems = append(systems, lanesSystem{name: title, url: d.url, batch: func(ctx context.Context, started chan<- struct{}) (int, error) {
			return fleetBatch(ctx, d, p, started)
		}})
		return nil
	}
	if !l.hasFlag("worker", "interactive-reserve") {
		s.notef("These binaries' worker has no `--interactive-reserve`: the reserve was not measured.")
		if err := fleetOf("today", "OllamaMax, today's policy"); err != nil {
			return err
		}
	} else {
		if err := fleetOf("reserve", "OllamaMax, interactive reserve", "--interactive-reserve", "1"); err != nil {
			return err
		}
		if err := fleetOf("today", "OllamaMax, today's policy", "--interactive-reserve", "0"); err != nil {
			return err
		}
	}
	if l.nginx == "" {
		s.notef("nginx was not available (not installed, or `-nginx off`): the nginx baseline was skipped (`apt-get install nginx-light`).")
	} else {
		addrs := make([]string, len(sims))
		for i, sim := range sims {
			addrs[i] = sim.addr
		}
		lc := &nginxServer{Name: "least_conn", Balance: "least_conn", Upstreams: addrs}
		if _, err := l.startNginx(ctx, "lanes-nginx", lc); err != nil {
			return err
		}
		url := "http://" + lc.Addr
		systems = append(systems, lanesSystem{name: "nginx least_conn", url: url, batch: func(ctx context.Context, started chan<- struct{}) (int, error) {
			return nginxBatch(ctx, url, p, slots, started)
		}})
	}

	c := newHTTPClient(256)
	t := table{caption: "Results", header: []string{"system", "idle p50", "idle p99", "during batch p50", "during batch p99",
		"p99 ÷ idle", "completed", "batch time", "batch lines/s"}}
	interactive := func(url string) sample {
		res := openLoop(ctx, c, url+"/api/generate", arr, p.lanesDur+p.lanesDrain)
		lat := make([]float64, len(res))
		for i, r := range res {
			lat[i] = math.Inf(1)
			if r.ok() {
				lat[i] = r.total.Seconds()
			}
		}
		if _, fails := split(res); fails != "" {
			s.notef("%s: interactive: %s.", url, fails)
		}
		return newSample(lat)
	}
	for _, sys := range systems {
		if _, fails := split([]result{do(ctx, c, sys.url+"/api/generate", generateBody("llama3.2", "warm-up", 1, true), time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("warm-up of %s: %s", sys.name, fails)
		}
		fmt.Fprintf(l.progress, "   %s: %d interactive arrivals over %s, idle\n", sys.name, len(arr), p.lanesDur)
		idle := interactive(sys.url)
		fmt.Fprintf(l.progress, "   %s: the same while a batch of %d lines runs\n", sys.name, p.lanesLines)
		bctx, cancel := context.WithTimeout(ctx, p.lanesBatchLimit)
		started := make(chan struct{})
		var done int
		var berr error
		t0 := time.Now()
		var took time.Duration
		var wg sync.WaitGroup
		wg.Go(func() {
			done, berr = sys.batch(bctx, started)
			took = time.Since(t0)
		})
		select {
		case <-started:
		case <-bctx.Done():
		}
		busy := interactive(sys.url)
		wg.Wait()
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if berr != nil {
			s.notef("%s: the batch: %v.", sys.name, berr)
		}
		completed := fmt.Sprintf("%d of %d", done, p.lanesLines)
		batchTime := secs(took.Seconds())
		if done < p.lanesLines {
			batchTime = "not completed in " + p.lanesBatchLimit.String()
		}
		t.rows = append(t.rows, []string{sys.name, secs(idle.p50()), secs(idle.p99()), secs(busy.p50()), secs(busy.p99()),
			ratio(idle.p99(), busy.p99()), completed, batchTime, fmt.Sprintf("%.0f", float64(done)/took.Seconds())})
		fmt.Fprintf(l.progress, "   %s: interactive p99 idle %s, during the batch %s (÷ idle %s); batch %s lines in %s\n",
			sys.name, secs(idle.p99()), secs(busy.p99()), ratio(idle.p99(), busy.p99()), completed, batchTime)
	}
	s.addTable(t)
	s.notef("\"p99 ÷ idle\": the interactive p99 while the batch runs divided by the same system's on the idle fleet; "+
		"the issue's bar is at most 1.10. \"completed\" and \"batch time\" are the batch's lines done and how long they "+
		"took; a batch not done within %s is canceled.", p.lanesBatchLimit)
	return nil
}

// fleetBatch submits the batch through pkg/batch to d's fleet, closes
// started once every line is queued, and waits for the batch to be done.
// It returns the lines done.
func fleetBatch(ctx context.Context, d *dispatcherProc, p params, started chan<- struct{}) (int, error) {
	bc, err := batch.Open(ctx, d.q)
	if err != nil {
		close(started)
		return 0, err
	}
	var file bytes.Buffer
	for i := range p.lanesLines {
		fmt.Fprintf(&file, `{"custom_id":"line-%d","method":"POST","url":"/api/generate","body":{"model":"llama3.2","prompt":"line %d","options":{"num_predict":%d}}}`+"\n",
			i, i, p.lanesBatchTokens)
	}
	sub, err := bc.Submit(ctx, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(file.Bytes())), nil },
		batch.SubmitOptions{Name: "lanes.jsonl"})
	close(started)
	if err != nil {
		return 0, err
	}
	st, err := bc.Watch(ctx, sub.Record.ID, 100*time.Millisecond, func(batch.Status) {})
	if err != nil && ctx.Err() != nil {
		// Not done in time: cancel it so that it does not run on.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = bc.Cancel(cctx, sub.Record.ID, 500*time.Millisecond) // The table says it was not completed either way.
		return st.Done, fmt.Errorf("not done in time")
	}
	return st.Done, err
}

// nginxBatch sends the batch's lines to url as requests, conc at once,
// closes started once all conc are under way, and returns the lines that
// got an answer.
func nginxBatch(ctx context.Context, url string, p params, conc int, started chan<- struct{}) (int, error) {
	c := newHTTPClient(conc)
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var sent atomic.Int64 // lines sent so far
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(p.lanesLines) {
					return
				}
				if sent.Add(1) == int64(conc) {
					once.Do(func() { close(started) })
				}
				r := do(ctx, c, url+"/api/generate", generateBody("llama3.2", fmt.Sprintf("line %d", i), p.lanesBatchTokens, false), time.Time{}, streamOpts{})
				if r.ok() {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	once.Do(func() { close(started) })
	if n := int(ok.Load()); n < p.lanesLines {
		return n, fmt.Errorf("%d lines without an answer", p.lanesLines-n)
	}
	return p.lanesLines, nil
}
