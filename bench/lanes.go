package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// lanesBatch is a batch under way on one system: stop ends it and returns
// how many of its lines were answered by then.
type lanesBatch func() (int, error)

// runLanes measures interactive latency while a batch of lanesLines lines
// runs: the same seeded Poisson arrivals of interactive requests go to each
// system once on an idle fleet and once while the batch runs. The systems
// are OllamaMax with the worker's interactive reserve (its default), with
// --interactive-reserve 0 (the policy before: a batch takes every slot),
// and nginx least_conn in front of the same simulators, to which the batch
// lines go as concurrent requests, as many at once as the fleet has slots.
//
// A batch only delays interactive work when its lines are long: a slot
// then frees up rarely. Lines of seconds each keep the fleet busy for far
// longer than the run, so the run measures a window of the batch, its
// throughput included, and then drops the lines left.
func runLanes(ctx context.Context, l *lab, p params, s *section) error {
	const ttft = 5 * time.Millisecond
	slots := p.lanesSims * p.lanesSlots
	arr := poissonArrivals(20261201, p.lanesRate, p.lanesDur, [2]int{p.lanesTokens, p.lanesTokens})
	lineTime := func(words int) time.Duration {
		return ttft + time.Duration((float64(words)/p.lanesPromptTPS+float64(p.lanesBatchTokens)/p.lanesTPS)*float64(time.Second))
	}
	lines := batchLines(p)
	s.design = []string{fmt.Sprintf(
		"%d simulated Ollamas (`--parallel %d`, %g tokens/s per stream, prompts evaluated at %g tokens/s, %s to the "+
			"first token besides). A batch of %d lines: `/api/generate` with prompts of %d–%d words (uniform, each "+
			"unlike the others, so no prompt cache helps) and %d tokens of answer, %s–%s of service each. Interactive "+
			"requests arrive open-loop as a Poisson process at %g/s for %s (%d streamed `/api/generate` requests, a "+
			"two-word prompt and %d tokens, about %s of service). Each system gets the same interactive arrivals twice: on "+
			"an idle fleet, then while the batch runs, from once every line is queued (OllamaMax) or every connection is "+
			"busy (nginx). OllamaMax (dispatcher + one worker per simulator, `--slots %d`) gets the batch through "+
			"`pkg/batch`, as `ollamaq batch submit` sends it, with the worker's interactive reserve (`--interactive-reserve 1`, "+
			"the default) and without it (`--interactive-reserve 0`, the policy before); nginx `least_conn` in front of the "+
			"same simulators gets each line as a request, %d at once (the fleet's slots). The lines take far longer than "+
			"the run (%d lines on %d slots), so the batch's throughput is measured over the window, from its first line "+
			"queued to the last interactive answer, and the lines left are then dropped (the job stream purged; nginx's "+
			"requests canceled). Latency runs from an arrival's due time to its last token.",
		p.lanesSims, p.lanesSlots, p.lanesTPS, p.lanesPromptTPS, ttft, p.lanesLines, p.lanesWords[0], p.lanesWords[1],
		p.lanesBatchTokens, lineTime(p.lanesWords[0]).Round(time.Millisecond), lineTime(p.lanesWords[1]).Round(time.Millisecond),
		p.lanesRate, p.lanesDur, len(arr), p.lanesTokens, (ttft + 2*time.Second/time.Duration(p.lanesPromptTPS) +
			time.Duration(float64(p.lanesTokens)/p.lanesTPS*float64(time.Second))).Round(time.Millisecond),
		p.lanesSlots, slots, p.lanesLines, slots)}

	sims := make([]*simProc, p.lanesSims)
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("lanes-sim%d", i), simOpts{models: "llama3.2", tps: p.lanesTPS, ttft: ttft,
			parallel: p.lanesSlots, tokens: p.lanesTokens, seed: int64(i + 1), maxQueue: 4096,
			extra: []string{"--prompt-tps", fmt.Sprint(p.lanesPromptTPS), "--prompt-cache", "-1"}}); err != nil {
			return err
		}
	}
	type lanesSystem struct {
		name  string
		url   string
		batch func(ctx context.Context) (lanesBatch, error) // starts the batch; returns once it runs
	}
	var systems []lanesSystem
	wait := (2*p.lanesDur + 2*p.lanesDrain + time.Minute).Round(time.Second)
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
		systems = append(systems, lanesSystem{name: title, url: d.url, batch: func(ctx context.Context) (lanesBatch, error) {
			return fleetBatch(ctx, d, lines)
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
	lcURL, err := l.leastConn(ctx, s, "lanes", sims)
	if err != nil {
		return err
	}
	if lcURL != "" {
		systems = append(systems, lanesSystem{name: "nginx least_conn", url: lcURL, batch: func(ctx context.Context) (lanesBatch, error) {
			return nginxBatch(ctx, lcURL, lines, slots), nil
		}})
	}

	c := newHTTPClient(256)
	t := table{caption: "Results", header: []string{"system", "idle p50", "idle p99", "during batch p50", "during batch p99",
		"p99 ÷ idle", "batch lines done", "batch lines/s"}}
	interactive := func(name, url string) sample {
		res := openLoop(ctx, c, url+"/api/generate", arr, p.lanesDur+p.lanesDrain)
		lat := make([]float64, len(res))
		for i, r := range res {
			lat[i] = math.Inf(1)
			if r.ok() {
				lat[i] = r.total.Seconds()
			}
		}
		if _, fails := split(res); fails != "" {
			s.notef("%s: interactive: %s.", name, fails)
		}
		return newSample(lat)
	}
	for _, sys := range systems {
		if _, fails := split([]result{do(ctx, c, sys.url+"/api/generate", generateBody("llama3.2", "warm-up", 1, true), time.Time{}, streamOpts{})}); fails != "" {
			return fmt.Errorf("warm-up of %s: %s", sys.name, fails)
		}
		fmt.Fprintf(l.progress, "   %s: %d interactive arrivals over %s, idle\n", sys.name, len(arr), p.lanesDur)
		idle := interactive(sys.name, sys.url)
		fmt.Fprintf(l.progress, "   %s: the same while a batch of %d lines runs\n", sys.name, p.lanesLines)
		t0 := time.Now()
		stop, err := sys.batch(ctx)
		if err != nil {
			return fmt.Errorf("%s: start the batch: %w", sys.name, err)
		}
		busy := interactive(sys.name, sys.url)
		took := time.Since(t0)
		done, err := stop()
		if err != nil {
			s.notef("%s: the batch: %v.", sys.name, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rate := float64(done) / took.Seconds()
		t.rows = append(t.rows, []string{sys.name, secs(idle.p50()), secs(idle.p99()), secs(busy.p50()), secs(busy.p99()),
			ratio(idle.p99(), busy.p99()), fmt.Sprintf("%d in %s", done, took.Round(100*time.Millisecond)), fmt.Sprintf("%.1f", rate)})
		fmt.Fprintf(l.progress, "   %s: interactive p99 idle %s, during the batch %s (÷ idle %s); batch %d lines in %s (%.1f/s)\n",
			sys.name, secs(idle.p99()), secs(busy.p99()), ratio(idle.p99(), busy.p99()), done, took.Round(100*time.Millisecond), rate)
	}
	s.addTable(t)
	s.notef("\"p99 ÷ idle\": the interactive p99 while the batch runs divided by the same system's on the idle fleet; " +
		"the issue's bar is at most 1.10. \"batch lines done\": the batch's lines answered from its first line queued to " +
		"the last interactive answer; the interactive reserve leaves the batch the slots less one per worker.")
	return nil
}

// batchLines returns the batch's requests: a prompt of words, uniform in
// p.lanesWords, that starts with the line's own number, so no two share a
// prefix, and p.lanesBatchTokens of answer.
func batchLines(p params) [][]byte {
	rng := rand.New(rand.NewPCG(5, 17))
	out := make([][]byte, p.lanesLines)
	for i := range out {
		n := p.lanesWords[0] + rng.IntN(p.lanesWords[1]-p.lanesWords[0]+1)
		prompt := fmt.Sprintf("line-%d%s", i, strings.Repeat(" w", n-1))
		out[i] = generateBody("llama3.2", prompt, p.lanesBatchTokens, false)
	}
	return out
}

// fleetBatch submits the lines through pkg/batch to d's fleet and returns
// once every line is queued. Its stop counts the lines done and drops the
// rest: it purges the batch's jobs from the job stream.
func fleetBatch(ctx context.Context, d *dispatcherProc, lines [][]byte) (lanesBatch, error) {
	bc, err := batch.Open(ctx, d.q)
	if err != nil {
		return nil, err
	}
	var file bytes.Buffer
	for i, body := range lines {
		fmt.Fprintf(&file, `{"custom_id":"line-%d","method":"POST","url":"/api/generate","body":%s}`+"\n", i, body)
	}
	sub, err := bc.Submit(ctx, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(file.Bytes())), nil },
		batch.SubmitOptions{Name: "lanes.jsonl"})
	if err != nil {
		return nil, err
	}
	return func() (int, error) {
		st, err := bc.Status(ctx, sub.Record.ID)
		if err != nil {
			return 0, err
		}
		s, err := d.q.JetStream().Stream(ctx, job.Stream)
		if err != nil {
			return st.Done, err
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(job.JobsPrefix+".*."+string(job.Batch)+".*")); err != nil {
			return st.Done, fmt.Errorf("drop the lines left: %w", err)
		}
		return st.Done, nil
	}, nil
}

// nginxBatch sends the lines to url as requests, conc at once, and returns
// once conc are under way. Its stop cancels the requests left and returns
// how many were answered.
func nginxBatch(ctx context.Context, url string, lines [][]byte, conc int) lanesBatch {
	ctx, cancel := context.WithCancel(ctx)
	c := newHTTPClient(conc)
	var next, ok, sent atomic.Int64
	var wg sync.WaitGroup
	running := make(chan struct{})
	var once sync.Once
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(lines)) {
					return
				}
				if sent.Add(1) == int64(conc) {
					once.Do(func() { close(running) })
				}
				if r := do(ctx, c, url+"/api/generate", lines[i], time.Time{}, streamOpts{}); r.ok() {
					ok.Add(1)
				}
			}
		})
	}
	select {
	case <-running:
	case <-ctx.Done():
	}
	return func() (int, error) {
		n := int(ok.Load())
		cancel()
		wg.Wait()
		return n, nil
	}
}
