package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// runOverhead measures what the queue adds to one stream: the same
// simulator answers the same requests directly and through dispatcher →
// JetStream → worker, alternating, at each concurrency level.
func runOverhead(ctx context.Context, l *lab, p params, s *section) error {
	maxConc := slices.Max(p.ovLevels)
	o := p.ovSim
	o.parallel = maxConc
	s.design = []string{fmt.Sprintf(
		"Closed loop: N clients each stream `/api/generate` answers of %d tokens, one request after the other, "+
			"from one simulator (`--tps %g --ttft %s --parallel %d`): directly, and through dispatcher → JetStream → "+
			"worker (`--slots %d`) → the same simulator. At each level the two paths alternate %d times. "+
			"Time to first token is the first NDJSON line at the client, total time the `done` line. "+
			"\"added\" is OllamaMax minus direct; the ratio is OllamaMax ÷ direct.",
		o.tokens, o.tps, o.ttft, o.parallel, maxConc, p.ovRounds)}

	sim, err := l.startSim(ctx, "overhead-sim", o)
	if err != nil {
		return err
	}
	d, err := l.startDispatcher(ctx, "overhead-dispatcher")
	if err != nil {
		return err
	}
	if _, err := l.startWorker(ctx, d, "overhead-w1", sim, maxConc); err != nil {
		return err
	}
	c := newHTTPClient(2 * maxConc)
	direct, via := sim.url+"/api/generate", d.url+"/api/generate"
	body := func(i int) []byte { return generateBody("llama3.2", "overhead "+strconv.Itoa(i), 0, true) }
	// Warm up both paths: connections from every client, the model load.
	for _, url := range []string{direct, via} {
		if _, fails := split(closedLoop(ctx, c, url, maxConc, 1, body)); fails != "" {
			return fmt.Errorf("warm-up of %s: %s", url, fails)
		}
	}

	header := []string{"streams", "direct p50", "OllamaMax p50", "added", "ratio", "direct p99", "OllamaMax p99", "added", "ratio",
		"direct max", "OllamaMax max", "requests per path"}
	ttft := table{caption: "Time to first token", header: header}
	total := table{caption: "Total time (to the done line)", header: header}
	fig := &overheadFigures{}
	for i, conc := range p.ovLevels {
		per := max(1, p.ovRequests[i]/conc/p.ovRounds)
		fmt.Fprintf(l.progress, "   %d streams: %d requests per path\n", conc, per*conc*p.ovRounds)
		var dr, vr []result
		for range p.ovRounds {
			dr = append(dr, closedLoop(ctx, c, direct, conc, per, body)...)
			vr = append(vr, closedLoop(ctx, c, via, conc, per, body)...)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		dOK, dFails := split(dr)
		vOK, vFails := split(vr)
		if dFails != "" {
			s.notef("%d streams, direct: %s.", conc, dFails)
		}
		if vFails != "" {
			s.notef("%d streams, through OllamaMax: %s.", conc, vFails)
		}
		n := fmt.Sprintf("%d", min(len(dOK), len(vOK)))
		for _, t := range []struct {
			tab *table
			get func(result) time.Duration
		}{{&ttft, func(r result) time.Duration { return r.ttft }}, {&total, func(r result) time.Duration { return r.total }}} {
			a, b := durations(pick(dOK, t.get)), durations(pick(vOK, t.get))
			t.tab.rows = append(t.tab.rows, []string{strconv.Itoa(conc),
				ms(a.p50()), ms(b.p50()), delta(a.p50(), b.p50()), ratio(a.p50(), b.p50()),
				ms(a.p99()), ms(b.p99()), delta(a.p99(), b.p99()), ratio(a.p99(), b.p99()), ms(a.max()), ms(b.max()), n})
			if t.tab == &ttft {
				fig.Levels = append(fig.Levels, overheadLevel{Streams: conc, Direct: a.p50(), OllamaMax: b.p50()})
			}
		}
	}
	s.addTable(ttft)
	s.addTable(total)
	s.figures.Overhead = fig
	return nil
}

// pick maps results to one of their durations.
func pick(rs []result, get func(result) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = get(r)
	}
	return out
}

// split separates completed requests from the others and describes the
// others ("3 of 100 did not complete: 2× HTTP 503, 1× stream broke: …"),
// or returns "" when all completed.
func split(rs []result) (ok []result, failures string) {
	counts := map[string]int{}
	for _, r := range rs {
		if r.ok() {
			ok = append(ok, r)
			continue
		}
		counts[r.outcome()]++
	}
	if len(ok) == len(rs) {
		return ok, ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d× %s", counts[k], k))
	}
	return ok, fmt.Sprintf("%d of %d requests did not complete (%s)", len(rs)-len(ok), len(rs), strings.Join(parts, ", "))
}
