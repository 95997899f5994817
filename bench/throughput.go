package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// runThroughput measures short non-streamed jobs per second through the
// HTTP shim and through the NATS-native requester, next to the simulator
// alone and to the raw JetStream round trip on the dispatcher's own server.
func runThroughput(ctx context.Context, l *lab, p params, s *section) error {
	o := simOpts{models: "llama3.2", tps: -1, ttft: -time.Millisecond, parallel: p.tpConc, tokens: 1, seed: 1}
	s.design = []string{fmt.Sprintf(
		"Closed loop, %d requests in flight: non-streamed `/api/generate` jobs of one token from an unpaced simulator "+
			"(`--tps -1 --ttft -1ms --tokens 1 --parallel %d`) behind one worker (`--slots %d`). Four paths, each for "+
			"%s per round, %d rounds, alternating: the simulator alone over HTTP (what the simulator itself costs); "+
			"the dispatcher's HTTP shim; the NATS-native path (`queue.Requester` in the driver, over TCP to the "+
			"dispatcher's embedded server); and a raw JetStream loop on the same server (publish with PubAck → "+
			"pull with Consume → reply on core NATS → Ack, all in the driver, no OllamaMax code, same file storage and "+
			"work-queue retention as the job stream): the engine's limit on this machine. Every process shares the same cores.",
		p.tpConc, p.tpConc, p.tpConc, p.tpWindow, p.tpRounds)}

	sim, err := l.startSim(ctx, "tput-sim", o)
	if err != nil {
		return err
	}
	d, err := l.startDispatcher(ctx, "tput-dispatcher")
	if err != nil {
		return err
	}
	w, err := l.startWorker(ctx, d, "tput-w1", sim, p.tpConc)
	if err != nil {
		return err
	}
	c := newHTTPClient(2 * p.tpConc)
	body := generateBody("llama3.2", "hi", 0, false)
	answer, err := fetch(ctx, c, sim.url+"/api/generate", body)
	if err != nil {
		return err
	}
	model, err := job.CanonicalModel("llama3.2")
	if err != nil {
		return err
	}
	req, err := queue.NewRequester(d.nc, d.q, "benchnative")
	if err != nil {
		return err
	}
	defer func() { _ = req.Close() }() // The connection closes with the scenario.
	raw, err := startRawLoop(ctx, d.natsURL, body, answer)
	if err != nil {
		return err
	}
	defer raw.close(ctx)

	paths := []struct {
		name string
		op   func(context.Context) error
	}{
		{"simulator alone, HTTP (reference)", httpOp(c, sim.url+"/api/generate", body)},
		{"OllamaMax HTTP shim (dispatcher)", httpOp(c, d.url+"/api/generate", body)},
		{"OllamaMax NATS-native (queue.Requester)", requesterOp(req, model, body)},
		{"raw JetStream loop (engine limit)", raw.op},
	}
	type total struct {
		ok, failed int
		elapsed    time.Duration
		err        error
		cpu        map[string]time.Duration
	}
	pids := map[string]int{"dispatcher": d.pid(), "worker": w.pid(), "sim": sim.pid(), "driver": os.Getpid()}
	totals := make([]total, len(paths))
	for _, path := range paths { // Warm up connections and consumers.
		if _, failed, err, _ := forDuration(ctx, p.tpConc, 200*time.Millisecond, path.op); failed > 0 {
			return fmt.Errorf("warm-up of %s: %w", path.name, err)
		}
	}
	for round := range p.tpRounds {
		for i, path := range paths {
			fmt.Fprintf(l.progress, "   round %d: %s\n", round+1, path.name)
			before, cerr := cpuTimes(pids)
			if cerr != nil {
				return cerr
			}
			ok, failed, err, elapsed := forDuration(ctx, p.tpConc, p.tpWindow, path.op)
			after, cerr := cpuTimes(pids)
			if cerr != nil {
				return cerr
			}
			t := &totals[i]
			t.ok, t.failed, t.elapsed = t.ok+ok, t.failed+failed, t.elapsed+elapsed
			if t.cpu == nil {
				t.cpu = map[string]time.Duration{}
			}
			for k := range pids {
				t.cpu[k] += after[k] - before[k]
			}
			if t.err == nil {
				t.err = err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rawRate := float64(totals[len(totals)-1].ok) / totals[len(totals)-1].elapsed.Seconds()
	t := table{header: []string{"path", "jobs/s", "÷ raw JetStream loop", "jobs", "failed",
		"CPU µs/job: dispatcher (with NATS server)", "worker", "simulator", "driver (client)", "CPU used (cores)"}}
	for i, path := range paths {
		tot := totals[i]
		r := float64(tot.ok) / tot.elapsed.Seconds()
		per := func(k string) string {
			return fmt.Sprintf("%.0f", float64(tot.cpu[k].Microseconds())/float64(max(tot.ok, 1)))
		}
		var used time.Duration
		for _, v := range tot.cpu {
			used += v
		}
		t.rows = append(t.rows, []string{path.name, rate(r), fmt.Sprintf("%.2f", r/rawRate),
			fmt.Sprint(tot.ok), fmt.Sprint(tot.failed), per("dispatcher"), per("worker"), per("sim"), per("driver"),
			fmt.Sprintf("%.2f", used.Seconds()/tot.elapsed.Seconds())})
		if totals[i].err != nil {
			s.notef("%s: first failure: %v", path.name, totals[i].err)
		}
	}
	s.addTable(t)
	jobsPerS := func(i int) float64 { return float64(totals[i].ok) / totals[i].elapsed.Seconds() }
	s.figures.Throughput = &throughputFigures{HTTP: jobsPerS(1), NATS: jobsPerS(2), RawLoop: rawRate}
	if n := raw.ackErrs.Load(); n > 0 {
		s.notef("The raw loop's responder failed to reply or ack %d times.", n)
	}
	return nil
}

// requesterOp submits one job through the NATS-native requester and reads
// its replies to the end.
func requesterOp(r *queue.Requester, model string, body []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := r.Submit(ctx, queue.Job{ID: job.NewID(), Model: model, Class: job.Interactive, Route: "/api/generate", Body: body})
		if err != nil {
			return err
		}
		defer st.Close()
		for {
			rep, err := st.Next(ctx)
			if err != nil {
				return fmt.Errorf("job %s: %w", st.ID(), err)
			}
			switch rep.Kind {
			case job.KindDone:
				return nil
			case job.KindError:
				return fmt.Errorf("job %s: error %d: %s", st.ID(), rep.Status, rep.Error)
			}
		}
	}
}

// fetch POSTs body and returns the response body, which must be a 200.
func fetch(ctx context.Context, c *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	return b, nil
}
