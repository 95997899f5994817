package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runLarge sends many requests of almost the largest body at once (long
// prompts; base64 images make such bodies ordinary) while ordinary answers
// stream, through one dispatcher and two workers, and reads the
// dispatcher's peak memory, whether every answer came whole, and whether
// anything stalled, ran twice or was dead-lettered (docs/operations.md,
// "Large requests").
func runLarge(ctx context.Context, l *lab, p params, s *section) error {
	n, ordinary, slots := p.largeRequests, p.largeOrdinary, p.largeSlots
	o := simOpts{models: "llama3.2", tps: 100, ttft: 10 * time.Millisecond, parallel: slots, tokens: 10, seed: 1, maxQueue: 4 * n}
	var sims []*simProc
	for i := range 2 {
		sim, err := l.startSim(ctx, fmt.Sprintf("large-sim%d", i), o)
		if err != nil {
			return err
		}
		sims = append(sims, sim)
	}
	d, err := l.startDispatcher(ctx, "large-dispatcher", "--max-queued", "0")
	if err != nil {
		return err
	}
	pids := map[string]int{"dispatcher": d.pid()}
	var workerMetrics []string
	for i, sim := range sims {
		id := fmt.Sprintf("large-w%d", i)
		var extra []string
		if l.hasFlag("worker", "listen") {
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			extra = []string{"--listen", addr}
			workerMetrics = append(workerMetrics, "http://"+addr+"/metrics")
		}
		w, err := l.startWorker(ctx, d, id, sim, slots, extra...)
		if err != nil {
			return err
		}
		pids[id] = w.pid()
	}
	size := p.largeBytes
	s.design = []string{fmt.Sprintf(
		"%d requests of %s each (`/api/generate` with a prompt of one long word, as large as the default `--max-body` lets "+
			"through the default 8 MiB NATS payload; answers of 10 tokens, streamed) are sent at once, "+
			"while %d ordinary answers of 150 tokens stream (half of them started before, half with the large ones). One dispatcher "+
			"(embedded NATS, its defaults: `--body-budget` 64 MiB where the binary has it), two workers with `--slots %d` (defaults: "+
			"`--fetch-bytes` 16 MiB where the binary has it), two simulators at 100 tokens/s. The dispatcher's VmRSS is read "+
			"every 20 ms, and every process's VmHWM at the end.",
		n, mib(int64(size)), 2*ordinary, slots)}

	c := newHTTPClient(n + 2*ordinary + 8)
	if _, fails := split(closedLoop(ctx, c, d.url+"/api/generate", 4, 2, func(int) []byte { return generateBody("llama3.2", "warm-up", 2, true) })); fails != "" {
		return fmt.Errorf("warm-up: %s", fails)
	}
	idle := map[string]int64{}
	for k, pid := range pids {
		r, _, err := memory(pid)
		if err != nil {
			return err
		}
		idle[k] = r
	}

	// The sampler of the dispatcher's memory reads /proc only: a scrape of
	// /metrics would read the oldest job of each queue from JetStream (for
	// ollamamax_queue_oldest_job_age_seconds), 8 MiB here, and so make the
	// memory it measures.
	sctx, stopSampling := context.WithCancel(ctx)
	var peakRSS int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if r, _, err := memory(d.pid()); err == nil {
				peakRSS = max(peakRSS, r)
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	word := strings.Repeat("x", size-256)
	large := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"model":"llama3.2","prompt":"large%d %s","options":{"num_predict":10}}`, i, word))
	}
	fmt.Fprintf(l.progress, "   %d requests of %s beside %d streams\n", n, mib(int64(size)), 2*ordinary)
	results := make([]result, n)
	streams := make([]result, 2*ordinary)
	var wg sync.WaitGroup
	stream := func(i int) {
		wg.Go(func() {
			streams[i] = do(ctx, c, d.url+"/api/generate", generateBody("llama3.2", fmt.Sprintf("ordinary %d", i), 150, true), time.Time{}, streamOpts{})
		})
	}
	began := time.Now()
	for i := range ordinary {
		stream(i)
	}
	for i := range n {
		wg.Go(func() { results[i] = do(ctx, c, d.url+"/api/generate", large(i), time.Time{}, streamOpts{}) })
	}
	for i := ordinary; i < 2*ordinary; i++ {
		stream(i)
	}
	wg.Wait()
	took := time.Since(began)
	stopSampling()
	<-sampled
	if err := ctx.Err(); err != nil {
		return err
	}

	okLarge, failLarge := split(results)
	okStreams, failStreams := split(streams)
	t := table{caption: "Requests", header: []string{"requests", "sent", "answered in full", "failed", "how they failed"}}
	t.rows = append(t.rows,
		[]string{"of " + mib(int64(size)), fmt.Sprint(n), fmt.Sprint(len(okLarge)), fmt.Sprint(n - len(okLarge)), orNone(failLarge)},
		[]string{"ordinary streams", fmt.Sprint(2 * ordinary), fmt.Sprint(len(okStreams)), fmt.Sprint(2*ordinary - len(okStreams)), orNone(failStreams)})
	s.addTable(t)

	m := table{caption: "Memory", header: []string{"process", "idle RSS", "peak RSS (VmHWM)", "peak RSS sampled every 20 ms"}}
	for _, k := range sortedKeys(pids) {
		_, hwm, err := memory(pids[k])
		if err != nil {
			return err
		}
		row := []string{k, mib(idle[k]), mib(hwm), ""}
		if k == "dispatcher" {
			row[3] = mib(peakRSS)
		}
		m.rows = append(m.rows, row)
	}
	s.addTable(m)

	dm, err := scrapeMetrics(ctx, d.url+"/metrics")
	if err != nil {
		return err
	}
	var redelivered float64
	for _, u := range workerMetrics {
		wm, err := scrapeMetrics(ctx, u)
		if err != nil {
			return err
		}
		redelivered += wm["ollamamax_worker_job_redeliveries_total"]
	}
	dead, err := d.q.DeadLetters(ctx, 1000)
	if err != nil {
		return err
	}
	s.notef("All answered in %s. Stalled jobs the dispatcher NAKed (`ollamamax_jobs_stalled_total`): %.0f; "+
		"redeliveries the workers saw: %.0f; dead letters: %d.", took.Round(10*time.Millisecond), dm["ollamamax_jobs_stalled_total"], redelivered, len(dead))
	if len(workerMetrics) == 0 {
		s.notef("The worker binary has no `--listen`: its redeliveries were not read.")
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// scrapeMetrics reads a Prometheus text page and sums the samples of each
// metric name over their labels.
func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body) // Drained for the connection's reuse.
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}
