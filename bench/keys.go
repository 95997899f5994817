package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The limits of the limited key: a thousand times what the throughput
// scenario reaches, so that nothing is refused and every request still
// goes through the token buckets and the charges.
const (
	keysRPM = 10_000_000
	keysTPM = 100_000_000
)

// runKeys measures what HTTP API keys cost: a dispatcher without --keys
// beside one with it, the latter used with a key without limits and with a
// key with requests- and tokens-per-minute limits, measured alternately in
// one run. NATS auth and TLS are off in both, so the ratio is the keys'.
func runKeys(ctx context.Context, l *lab, p params, s *section) error {
	if !l.hasFlag("dispatcher", "keys") {
		s.skipped = true
		s.notef("Not measured: this dispatcher binary has no `--keys` flag.")
		fmt.Fprintln(l.progress, "   skipped: the dispatcher has no --keys flag")
		return nil
	}
	o := simOpts{models: "llama3.2", tps: -1, ttft: -time.Millisecond, parallel: 2 * p.tpConc, tokens: 1, seed: 1}
	s.design = []string{fmt.Sprintf(
		"Two deployments side by side in front of one unpaced simulator (`--tps -1 --ttft -1ms --tokens 1 --parallel %d`), "+
			"each a dispatcher with its embedded NATS server and one worker (`--slots %d`), NATS auth and TLS off: **off** as in the "+
			"throughput scenario; **on** with the dispatcher given `--keys`, two keys created in its `%s` bucket through pkg/apikey "+
			"once it was up, and every request sent with `Authorization: Bearer`. **key**: a key without limits (the cache look-up, "+
			"the secret's SHA-256, the job's key headers and MAC, the per-tenant metrics); **key with limits**: a key with %s requests "+
			"and %s tokens per minute, which nothing here reaches, so that every request also takes from the token buckets and "+
			"publishes a charge to `%s`, as does every finished job whose worker reports token counts, and the dispatcher follows "+
			"that stream (one dispatcher here: it reads its own charges and skips them). "+
			"Short jobs per second over HTTP: closed loop, %d in flight, non-streamed one-token jobs, %s per level per round; "+
			"time to first token: one stream, %d streamed one-token requests per level per round. %d rounds, the levels in turn, "+
			"each round starting with the next. The ratios are on ÷ off.",
		o.parallel, p.tpConc, job.KeyBucket, thousands(keysRPM), thousands(keysTPM), job.LimitsStream,
		p.tpConc, p.tpWindow, p.secTTFT, p.keysRounds)}

	sim, err := l.startSim(ctx, "keys-sim", o)
	if err != nil {
		return err
	}
	off, err := l.startDispatcher(ctx, "keys-off-dispatcher")
	if err != nil {
		return err
	}
	on, err := l.startDispatcher(ctx, "keys-on-dispatcher", "--keys")
	if err != nil {
		return err
	}
	for _, d := range []*dispatcherProc{off, on} {
		if _, err := l.startWorker(ctx, d, strings.TrimSuffix(d.name, "-dispatcher")+"-w1", sim, p.tpConc); err != nil {
			return err
		}
	}
	kv, err := on.q.Keys(ctx)
	if err != nil {
		return err
	}
	store := apikey.NewStore(kv)
	transport := newHTTPClient(4 * p.tpConc).Transport
	levels := []*keyLevel{{name: "off", d: off}, {name: "key", d: on}, {name: "key with limits", d: on}}
	for _, lv := range levels {
		lv.key = &bearer{base: transport}
		lv.c = &http.Client{Transport: lv.key}
	}
	for i, k := range []apikey.Key{
		{Name: "bench", Tenant: "bench", Role: apikey.User},
		{Name: "bench-limited", Tenant: "bench", Role: apikey.User, RPM: keysRPM, TPM: keysTPM},
	} {
		k, secret, err := store.Create(ctx, k, time.Now())
		if err != nil {
			return fmt.Errorf("create key %s: %w", k.Name, err)
		}
		lv := levels[i+1]
		lv.key.secret = secret
		// The dispatcher's cache learns of the key from its KV watch.
		if err := waitUntil(ctx, on.proc, readyTimeout, "the dispatcher to accept key "+k.ID, func() bool {
			return status(ctx, lv.c, on.url+"/api/tags") == http.StatusOK
		}); err != nil {
			return err
		}
	}
	if got := status(ctx, levels[0].c, on.url+"/api/tags"); got != http.StatusUnauthorized {
		return fmt.Errorf("the dispatcher with --keys answered a request without a key with %d, want 401", got)
	}

	for _, lv := range levels {
		lv.key.sent.Store(0) // Count the jobs only: listings are not charged.
	}
	body := generateBody("llama3.2", "hi", 0, false)
	stream := func(i int) []byte { return generateBody("llama3.2", "keys "+strconv.Itoa(i), 0, true) }
	for _, lv := range levels { // Warm up connections, consumers, the model and the buckets.
		if _, failed, err, _ := forDuration(ctx, p.tpConc, 200*time.Millisecond, lv.op(body)); failed > 0 {
			return fmt.Errorf("warm-up of %s: %w", lv.name, err)
		}
		if _, fails := split(closedLoop(ctx, lv.c, lv.d.url+"/api/generate", 1, 3, stream)); fails != "" {
			return fmt.Errorf("warm-up of streaming, %s: %s", lv.name, fails)
		}
	}
	for round := range p.keysRounds {
		for k := range levels {
			lv := levels[(round+k)%len(levels)]
			fmt.Fprintf(l.progress, "   round %d: %s\n", round+1, lv.name)
			ok, failed, err, elapsed := forDuration(ctx, p.tpConc, p.tpWindow, lv.op(body))
			lv.ok, lv.failed, lv.elapsed = lv.ok+ok, lv.failed+failed, lv.elapsed+elapsed
			if lv.err == nil {
				lv.err = err
			}
			lv.ttft = append(lv.ttft, closedLoop(ctx, lv.c, lv.d.url+"/api/generate", 1, p.secTTFT, stream)...)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	var jobs [3]float64
	var ttft [3]sample
	for i, lv := range levels {
		jobs[i] = float64(lv.ok) / lv.elapsed.Seconds()
		if lv.err != nil {
			s.notef("%s: %d jobs failed, first: %v", lv.name, lv.failed, lv.err)
		}
		okr, fails := split(lv.ttft)
		if fails != "" {
			s.notef("%s, time to first token: %s.", lv.name, fails)
		}
		ttft[i] = durations(pick(okr, func(r result) time.Duration { return r.ttft }))
	}
	t := table{header: []string{"measure", "off", "key", "key with limits", "key ÷ off", "key with limits ÷ off"}}
	row := func(what string, v [3]float64, format func(float64) string) []string {
		return []string{what, format(v[0]), format(v[1]), format(v[2]), ratio(v[0], v[1]), ratio(v[0], v[2])}
	}
	t.rows = append(t.rows,
		row("HTTP shim, jobs/s", jobs, rate),
		row("time to first token p50, 1 stream", [3]float64{ttft[0].p50(), ttft[1].p50(), ttft[2].p50()}, ms),
		row("time to first token p99, 1 stream", [3]float64{ttft[0].p99(), ttft[1].p99(), ttft[2].p99()}, ms),
	)
	s.addTable(t)

	// What the limiter stored: one charge per admitted request, and one per
	// finished job that reported token counts.
	reqs, toks, err := countCharges(ctx, on.q.JetStream())
	if err != nil {
		return err
	}
	sent := levels[2].key.sent.Load()
	if toks == 0 {
		s.notef("`%s` holds %s request charges for the %s jobs sent with the limited key, and no token charges: "+
			"the worker reported no token counts on done, so the charge per finished job did not run.",
			job.LimitsStream, thousands(float64(reqs)), thousands(float64(sent)))
	} else {
		s.notef("`%s` holds %s request charges for the %s jobs sent with the limited key, and %s token charges, "+
			"one per finished job whose worker reported token counts on done.",
			job.LimitsStream, thousands(float64(reqs)), thousands(float64(sent)), thousands(float64(toks)))
	}
	level := func(i int) keysLevel { return keysLevel{HTTP: jobs[i], TTFT: orInf(ttft[i].p50())} }
	s.figures.Keys = &keysFigures{Off: level(0), Key: level(1), Limited: level(2)}
	return nil
}

// keyLevel is one of the compared levels and what was measured of it.
type keyLevel struct {
	name string
	d    *dispatcherProc
	key  *bearer      // the level's key, if any; counts the jobs sent
	c    *http.Client // through key

	ok, failed int
	elapsed    time.Duration
	err        error
	ttft       []result
}

// op is one non-streamed job through the level's dispatcher.
func (lv *keyLevel) op(body []byte) func(context.Context) error {
	return httpOp(lv.c, lv.d.url+"/api/generate", body)
}

// bearer is a transport that presents an API key on every request, as the
// Ollama and OpenAI SDKs do, and counts the requests. Without a secret it
// presents none: the "off" level goes through the same code, so that the
// client's share of the two cores is the same at every level.
type bearer struct {
	secret string
	base   http.RoundTripper
	sent   atomic.Int64
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	b.sent.Add(1)
	r = r.Clone(r.Context()) // A RoundTripper must not change the request it was given.
	if b.secret != "" {
		r.Header.Set("Authorization", "Bearer "+b.secret)
	}
	return b.base.RoundTrip(r)
}

// status is the HTTP status of GET url, or 0 without an answer within a second.
func status(ctx context.Context, c *http.Client, url string) int {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body) // Only the status matters.
	_ = resp.Body.Close()
	return resp.StatusCode
}

// countCharges reads every rate-limit charge in the limits stream and counts
// the request charges and the token charges. A charge is the JSON
// pkg/dispatcher publishes: {"r":1} for a request, {"t":n} for tokens.
func countCharges(ctx context.Context, js jetstream.JetStream) (requests, tokens int, err error) {
	st, err := js.Stream(ctx, job.LimitsStream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", job.LimitsStream, err)
	}
	n := st.CachedInfo().State.Msgs
	if n == 0 {
		return 0, 0, nil
	}
	cons, err := js.OrderedConsumer(ctx, job.LimitsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", job.LimitsStream, err)
	}
	for read := uint64(0); read < n; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return 0, 0, fmt.Errorf("read %s: %w", job.LimitsStream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var c struct {
				Requests int `json:"r"`
				Tokens   int `json:"t"`
			}
			if json.Unmarshal(m.Data(), &c) != nil {
				continue // Not a charge: nothing to count.
			}
			if c.Requests > 0 {
				requests++
			}
			if c.Tokens > 0 {
				tokens++
			}
		}
		if err := batch.Error(); err != nil {
			return 0, 0, fmt.Errorf("read %s: %w", job.LimitsStream, err)
		}
		if got == 0 {
			return 0, 0, fmt.Errorf("read %s: %d of %d charges arrived", job.LimitsStream, read, n)
		}
		read += uint64(got)
	}
	return requests, tokens, nil
}
