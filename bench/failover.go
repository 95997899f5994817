package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// failoverCase is one moment to kill the serving process at.
type failoverCase struct {
	name string
	ttft time.Duration // the simulators' --ttft
	// midStream: kill once every stream has its first token (else: while
	// every job is in prompt evaluation, before any token).
	midStream bool
}

// failoverRun is what the clients of one case saw.
type failoverRun struct {
	fc      failoverCase
	results []result
	kill    time.Time
	tokens  int // tokens every answer must have
}

// complete reports whether r is a whole answer: a done line after exactly
// the tokens asked for, so a continued stream lost and repeated nothing.
func (run failoverRun) complete(r result) bool { return r.ok() && r.tokens == run.tokens }

// outcome is r.outcome, telling apart answers of the wrong length.
func (run failoverRun) outcome(r result) string {
	if r.ok() && r.tokens != run.tokens {
		return fmt.Sprintf("done, but %d tokens instead of %d", r.tokens, run.tokens)
	}
	return r.outcome()
}

// runFailover kills a serving process while streams are running, with
// OllamaMax (the worker, SIGKILL) and with nginx (the simulator behind it,
// SIGKILL: nginx has no worker), and reports what the clients saw.
func runFailover(ctx context.Context, l *lab, p params, s *section) error {
	slots := (p.foStreams + 1) / 2
	cases := []failoverCase{{name: "mid-stream", ttft: 50 * time.Millisecond, midStream: true}}
	if p.foPromptTTFT > 0 {
		cases = append(cases, failoverCase{name: "before the first token", ttft: p.foPromptTTFT})
	}
	s.design = []string{fmt.Sprintf(
		"%d streams of %d tokens (`--tps %g`) run on three simulated Ollamas with %d slots each, so the fleet has room "+
			"for half as many again. **OllamaMax**: dispatcher and three workers run at the default settings (`--ack-wait %s`, `--stall 750ms`); the worker running "+
			"the most jobs (by the node records) is killed with SIGKILL, and the other two have exactly enough free slots "+
			"for its jobs. **nginx** (`least_conn`, defaults otherwise) has no worker process: the first simulator behind "+
			"it is killed instead. "+
			"Case *mid-stream*: the kill comes %s after every stream has its first token. Case *before the first token*: "+
			"the simulators take %s to the first token (prompt evaluation) and the kill comes after every job has been "+
			"taken (by the node records), before any token. A stream counts as interrupted when it did not complete, or, mid-stream, when nothing "+
			"reached its client for more than %s after the kill (its tokens come every %s otherwise), or, before the first "+
			"token, when its first token came more than %s after the prompt time. A stream counts as completed when its "+
			"client got the done line after exactly the tokens asked for (`num_predict`), so that a continued stream "+
			"neither lost nor repeated any. \"Heard nothing for\" is the time from "+
			"the kill to the next byte the interrupted stream's client received: a token, an error line, or the end "+
			"of the response; before the first token, less the prompt time (%s), which the worker that takes the "+
			"job over must spend again.",
		p.foStreams, p.foTokens, p.foTPS, slots, p.foAckWait, p.foKillAfter, p.foPromptTTFT,
		stallThreshold, time.Duration(float64(time.Second)/p.foTPS), lateThreshold, p.foPromptTTFT)}
	if p.foPromptTTFT == 0 {
		s.design[0] += " (Short mode runs the mid-stream case only.)"
	}
	t := table{header: []string{"case", "system", "streams", "interrupted", "interrupted that completed",
		"heard nothing for (p50 / max)", "what the interrupted clients got", "all streams completed"}}
	var fig *failoverFigures // of the mid-stream case
	for _, fc := range cases {
		fmt.Fprintf(l.progress, "   %s: OllamaMax\n", fc.name)
		run, err := failoverOllamaMax(ctx, l, p, fc, slots)
		if err != nil {
			return fmt.Errorf("%s, OllamaMax: %w", fc.name, err)
		}
		l.stopAll()
		tl := run.tally()
		t.rows = append(t.rows, failoverRow(fc.name, fmt.Sprintf("OllamaMax (ack wait %s)", p.foAckWait), tl))
		if fc.midStream {
			fig = &failoverFigures{AckWait: p.foAckWait.Seconds(), OllamaMax: *tl.figures()}
			if n := run.redelivered(); n > 0 {
				s.notef("mid-stream, OllamaMax: %d interrupted responses ended with an `{\"error\":…}` line after the "+
					"redelivery: the dispatcher did not continue a stream it had already partly relayed.", n)
			}
		}
		if l.nginx == "" {
			continue
		}
		fmt.Fprintf(l.progress, "   %s: nginx\n", fc.name)
		if run, err = failoverNginx(ctx, l, p, fc, slots); err != nil {
			return fmt.Errorf("%s, nginx: %w", fc.name, err)
		}
		l.stopAll()
		tl = run.tally()
		t.rows = append(t.rows, failoverRow(fc.name, "nginx least_conn", tl))
		if fc.midStream {
			fig.Nginx = tl.figures()
		}
	}
	s.addTable(t)
	s.figures.Failover = fig
	if l.nginx == "" {
		s.notef("nginx was not available (not installed, or `-nginx off`): the nginx rows were skipped (`apt-get install nginx-light`).")
	}
	return nil
}

// failoverOllamaMax runs one case through OllamaMax and kills a worker.
func failoverOllamaMax(ctx context.Context, l *lab, p params, fc failoverCase, slots int) (failoverRun, error) {
	ack := p.foAckWait.String()
	var sims [3]*simProc
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("fo-sim%d", i), simOpts{models: "llama3.2", tps: p.foTPS, ttft: fc.ttft,
			parallel: slots, tokens: p.foTokens, seed: int64(i + 1)}); err != nil {
			return failoverRun{}, err
		}
	}
	d, err := l.startDispatcher(ctx, "fo-dispatcher", "--ack-wait", ack, "--queue-wait", "60s")
	if err != nil {
		return failoverRun{}, err
	}
	workers := map[string]*proc{}
	for i, sim := range sims {
		id := fmt.Sprintf("fo-w%d", i)
		if workers[id], err = l.startWorker(ctx, d, id, sim, slots, "--ack-wait", ack); err != nil {
			return failoverRun{}, err
		}
	}
	streams := startStreams(ctx, newHTTPClient(2*p.foStreams), d.url+"/api/generate", p.foStreams, p.foTokens)
	defer streams.stop()
	// busiest reads the node records (current within half a second of a job
	// starting) and returns the worker running the most jobs and the total.
	busiest := func() (id string, busy, total int) {
		for w := range workers {
			n, err := d.node(ctx, w)
			if err != nil || n == nil {
				continue
			}
			total += n.SlotsBusy
			if n.SlotsBusy > busy {
				id, busy = w, n.SlotsBusy
			}
		}
		return id, busy, total
	}
	if fc.midStream {
		if err := streams.waitFirstTokens(ctx); err != nil {
			return failoverRun{}, err
		}
		sleepUntil(ctx, time.Now().Add(p.foKillAfter))
	}
	var victim string
	if err := waitUntil(ctx, nil, 10*time.Second, "the node records to show every job running", func() bool {
		id, _, total := busiest()
		victim = id
		return total == p.foStreams
	}); err != nil {
		return failoverRun{}, err
	}
	kill := time.Now()
	workers[victim].kill()
	return failoverRun{fc: fc, results: streams.wait(), kill: kill, tokens: p.foTokens}, nil
}

// failoverNginx runs one case through nginx and kills a simulator.
func failoverNginx(ctx context.Context, l *lab, p params, fc failoverCase, slots int) (failoverRun, error) {
	var sims [3]*simProc
	addrs := make([]string, len(sims))
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("fo-nginx-sim%d", i), simOpts{models: "llama3.2", tps: p.foTPS, ttft: fc.ttft,
			parallel: slots, tokens: p.foTokens, seed: int64(i + 1)}); err != nil {
			return failoverRun{}, err
		}
		addrs[i] = sims[i].addr
	}
	srv := &nginxServer{Name: "least_conn", Balance: "least_conn", Upstreams: addrs}
	if _, err := l.startNginx(ctx, "fo-nginx", srv); err != nil {
		return failoverRun{}, err
	}
	streams := startStreams(ctx, newHTTPClient(2*p.foStreams), "http://"+srv.Addr+"/api/generate", p.foStreams, p.foTokens)
	defer streams.stop()
	if fc.midStream {
		if err := streams.waitFirstTokens(ctx); err != nil {
			return failoverRun{}, err
		}
		sleepUntil(ctx, time.Now().Add(p.foKillAfter))
	} else {
		// Nothing shows when nginx has passed a request on; give it ample time.
		sleepUntil(ctx, time.Now().Add(min(p.foKillAfter, fc.ttft/2)))
	}
	kill := time.Now()
	sims[0].kill()
	return failoverRun{fc: fc, results: streams.wait(), kill: kill, tokens: p.foTokens}, nil
}

// streamSet is a set of concurrent streams started together.
type streamSet struct {
	n       int
	first   atomic.Int64 // streams that have their first token
	results []result
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// startStreams starts n streams of the given number of tokens (num_predict),
// recording the arrival of every line. They are bounded to two minutes.
func startStreams(ctx context.Context, c *http.Client, url string, n, tokens int) *streamSet {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	ss := &streamSet{n: n, results: make([]result, n), cancel: cancel}
	for i := range n {
		ss.wg.Go(func() {
			rctx := ctx
			var seen bool
			ss.results[i] = do(rctx, c, url, generateBody("llama3.2", fmt.Sprintf("failover %d", i), tokens, true), time.Time{},
				streamOpts{lines: true, onLine: func(time.Time) {
					if !seen {
						seen = true
						ss.first.Add(1)
					}
				}})
		})
	}
	return ss
}

// waitFirstTokens waits until every stream has its first token.
func (ss *streamSet) waitFirstTokens(ctx context.Context) error {
	return waitUntil(ctx, nil, 20*time.Second, "every stream's first token", func() bool { return int(ss.first.Load()) == ss.n })
}

// wait waits for every stream to end and returns their results.
func (ss *streamSet) wait() []result {
	ss.wg.Wait()
	ss.cancel()
	return ss.results
}

// stop cancels the streams that are still running and waits for them.
func (ss *streamSet) stop() {
	ss.cancel()
	ss.wg.Wait()
}

// sleepUntil sleeps until t or until ctx is done.
func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// stallThreshold is how long a running stream may hear nothing after the
// kill and still count as not interrupted; lateThreshold is how much later
// than the prompt time a first token may come.
const (
	stallThreshold = 250 * time.Millisecond
	lateThreshold  = 750 * time.Millisecond
)

// heardNothing is the time from the kill to the next line the stream's
// client received, or to the end of its response.
func heardNothing(r result, kill time.Time) time.Duration {
	for _, t := range r.lines {
		if t.After(kill) {
			return t.Sub(kill)
		}
	}
	return max(r.end.Sub(kill), 0)
}

// stall is what an interrupted stream's client waited for because of the
// kill: mid-stream, the time from the kill to its next line; before the
// first token, the same less the prompt time the new worker spends again
// (work lost with the killed worker, which no failover can save).
func (run failoverRun) stall(r result) time.Duration {
	d := heardNothing(r, run.kill)
	if !run.fc.midStream {
		d = max(d-run.fc.ttft, 0)
	}
	return d
}

// interrupted lists the streams the kill interrupted.
func (run failoverRun) interrupted() []result {
	var out []result
	for _, r := range run.results {
		switch {
		case !run.complete(r):
		case run.fc.midStream && heardNothing(r, run.kill) > stallThreshold:
		case !run.fc.midStream && r.ttft > run.fc.ttft+lateThreshold:
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// redelivered counts the interrupted streams that ended with an error line.
func (run failoverRun) redelivered() int {
	n := 0
	for _, r := range run.interrupted() {
		if r.errLine {
			n++
		}
	}
	return n
}

// failoverTally is what one run's clients saw, counted.
type failoverTally struct {
	streams, completed int // all streams, and those that completed
	hit, hitCompleted  int // the interrupted streams, and those of them that completed
	heardNothing       sample
	outcomes           map[string]int // how the interrupted streams ended
}

func (run failoverRun) tally() failoverTally {
	t := failoverTally{streams: len(run.results), outcomes: map[string]int{}}
	var waits []time.Duration
	for _, r := range run.interrupted() {
		t.hit++
		waits = append(waits, run.stall(r))
		t.outcomes[run.outcome(r)]++
		if run.complete(r) {
			t.hitCompleted++
		}
	}
	for _, r := range run.results {
		if run.complete(r) {
			t.completed++
		}
	}
	t.heardNothing = durations(waits)
	return t
}

// figures are the README's figures of the run.
func (t failoverTally) figures() *failoverSystem {
	f := &failoverSystem{Streams: t.streams, Completed: t.completed, Interrupted: t.hit}
	if t.heardNothing.n() > 0 {
		f.Pause = t.heardNothing.max()
	}
	return f
}

// failoverRow summarizes one run for the table.
func failoverRow(caseName, system string, t failoverTally) []string {
	var got []string
	for _, k := range slices.Sorted(maps.Keys(t.outcomes)) {
		got = append(got, fmt.Sprintf("%d× %s", t.outcomes[k], k))
	}
	w := t.heardNothing
	heard := "—"
	if w.n() > 0 {
		heard = secs(w.p50()) + " / " + secs(w.max())
	}
	gotCell := "—"
	if len(got) > 0 {
		gotCell = strings.Join(got, ", ")
	}
	return []string{caseName, system, fmt.Sprint(t.streams), fmt.Sprint(t.hit),
		fmt.Sprintf("%d of %d", t.hitCompleted, t.hit), heard, gotCell, percent(t.completed, t.streams)}
}

// percent formats a share.
func percent(n, of int) string {
	if of == 0 {
		return "—"
	}
	return fmt.Sprintf("%d of %d (%.0f%%)", n, of, math.Round(100*float64(n)/float64(of)))
}
