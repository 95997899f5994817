package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// runSecurity measures what operator mode and TLS on the NATS connections
// cost: the same dispatcher, worker and simulator with auth and TLS off and
// on, measured alternately in one run.
func runSecurity(ctx context.Context, l *lab, p params, s *section) error {
	o := simOpts{models: "llama3.2", tps: -1, ttft: -time.Millisecond, parallel: 2 * p.tpConc, tokens: 1, seed: 1}
	s.design = []string{fmt.Sprintf(
		"Two deployments side by side in front of one unpaced simulator (`--tps -1 --ttft -1ms --tokens 1 --parallel %d`), "+
			"each a dispatcher with its embedded NATS server and one worker (`--slots %d`): **off** as in the throughput scenario; "+
			"**on** with the dispatcher given `--auth-dir` (a fresh directory from pkg/auth: operator mode, role credentials) and "+
			"`--nats-tls-cert/--nats-tls-key` (a test CA's server certificate), the worker `--nats-creds` (role worker) and `--nats-ca`, "+
			"the driver's NATS-native client on role client credentials over TLS. Short jobs per second: closed loop, %d in flight, non-streamed "+
			"one-token jobs, %s per path per round; time to first token: one stream, %d streamed one-token requests per round. "+
			"%d rounds, the deployments alternating. The ratio is on ÷ off.",
		o.parallel, p.tpConc, p.tpConc, p.tpWindow, p.secTTFT, p.tpRounds)}

	sim, err := l.startSim(ctx, "sec-sim", o)
	if err != nil {
		return err
	}
	sec, err := newNATSSecurity(l.path("sec-on"))
	if err != nil {
		return err
	}
	model, err := job.CanonicalModel("llama3.2")
	if err != nil {
		return err
	}
	type deployment struct {
		d   *dispatcherProc
		req *queue.Requester
	}
	var deps [2]deployment // off, on
	for i, sc := range []*natsSecurity{nil, sec} {
		name := "sec-" + [2]string{"off", "on"}[i]
		d, err := l.startSecureDispatcher(ctx, name+"-dispatcher", sc)
		if err != nil {
			return err
		}
		id := name + "-w1"
		var extra []string
		if sc != nil {
			if extra, err = sc.workerFlags(id); err != nil {
				return err
			}
		}
		if _, err := l.startWorker(ctx, d, id, sim, p.tpConc, extra...); err != nil {
			return err
		}
		nc, q, requester := d.nc, d.q, "benchnative"
		if sc != nil {
			requester = "benchclient"
			opts, err := sc.options(requester, auth.Client)
			if err != nil {
				return err
			}
			if nc, err = nats.Connect(d.natsURL, append(opts, nats.Name("ollamamax-bench-client"))...); err != nil {
				return fmt.Errorf("connect as %s: %w", requester, err)
			}
			l.onStop(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			if q, err = queue.Open(ctx, js); err != nil {
				return fmt.Errorf("open the queue as %s: %w", requester, err)
			}
		}
		req, err := queue.NewRequester(nc, q, requester)
		if err != nil {
			return err
		}
		defer func() { _ = req.Close() }()
		deps[i] = deployment{d, req}
	}

	c := newHTTPClient(4 * p.tpConc)
	body := generateBody("llama3.2", "hi", 0, false)
	stream := func(i int) []byte { return generateBody("llama3.2", "security "+strconv.Itoa(i), 0, true) }
	type path struct {
		name string
		op   func(context.Context) error
	}
	paths := func(d deployment) []path {
		return []path{
			{"HTTP shim", httpOp(c, d.d.url+"/api/generate", body)},
			{"NATS-native", requesterOp(d.req, model, body)},
		}
	}
	for _, d := range deps { // Warm up connections, consumers and the model.
		for _, pa := range paths(d) {
			if _, failed, err, _ := forDuration(ctx, p.tpConc, 200*time.Millisecond, pa.op); failed > 0 {
				return fmt.Errorf("warm-up of %s: %w", pa.name, err)
			}
		}
		if _, fails := split(closedLoop(ctx, c, d.d.url+"/api/generate", 1, 3, stream)); fails != "" {
			return fmt.Errorf("warm-up of streaming: %s", fails)
		}
	}
	type total struct {
		ok      [2]int
		failed  [2]int
		elapsed [2]time.Duration
		err     [2]error
		ttft    []result
	}
	var totals [2]total
	for round := range p.tpRounds {
		for i, d := range deps {
			fmt.Fprintf(l.progress, "   round %d: %s\n", round+1, [2]string{"off", "auth + TLS on"}[i])
			t := &totals[i]
			for j, pa := range paths(d) {
				ok, failed, err, elapsed := forDuration(ctx, p.tpConc, p.tpWindow, pa.op)
				t.ok[j], t.failed[j], t.elapsed[j] = t.ok[j]+ok, t.failed[j]+failed, t.elapsed[j]+elapsed
				if t.err[j] == nil {
					t.err[j] = err
				}
			}
			t.ttft = append(t.ttft, closedLoop(ctx, c, d.d.url+"/api/generate", 1, p.secTTFT, stream)...)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fig := &securityFigures{}
	var jobs [2][2]float64
	var ttft [2]sample
	for i := range totals {
		t := &totals[i]
		for j := range 2 {
			jobs[i][j] = float64(t.ok[j]) / t.elapsed[j].Seconds()
			if t.err[j] != nil {
				s.notef("%s, %s: %d failed, first: %v", [2]string{"off", "on"}[i], paths(deps[i])[j].name, t.failed[j], t.err[j])
			}
		}
		okr, fails := split(t.ttft)
		if fails != "" {
			s.notef("%s, time to first token: %s.", [2]string{"off", "on"}[i], fails)
		}
		ttft[i] = durations(pick(okr, func(r result) time.Duration { return r.ttft }))
	}
	fig.Off = securityLevel{HTTP: jobs[0][0], NATS: jobs[0][1], TTFT: orInf(ttft[0].p50())}
	fig.On = securityLevel{HTTP: jobs[1][0], NATS: jobs[1][1], TTFT: orInf(ttft[1].p50())}
	t := table{header: []string{"measure", "off", "auth + TLS on", "on ÷ off"}}
	t.rows = append(t.rows,
		[]string{"HTTP shim, jobs/s", rate(jobs[0][0]), rate(jobs[1][0]), ratio(jobs[0][0], jobs[1][0])},
		[]string{"NATS-native, jobs/s", rate(jobs[0][1]), rate(jobs[1][1]), ratio(jobs[0][1], jobs[1][1])},
		[]string{"time to first token p50, 1 stream", ms(ttft[0].p50()), ms(ttft[1].p50()), ratio(ttft[0].p50(), ttft[1].p50())},
		[]string{"time to first token p99, 1 stream", ms(ttft[0].p99()), ms(ttft[1].p99()), ratio(ttft[0].p99(), ttft[1].p99())},
	)
	s.addTable(t)
	s.figures.Security = fig
	return nil
}
