package dispatcher_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// streamResult is what a client read from one streamed answer.
type streamResult struct {
	status int
	text   string
	done   bool
	err    string // an error line, or the transport error
}

// readStream posts body to u and reads the NDJSON answer of a chat or
// generate request.
func readStream(ctx context.Context, u string, body *bigBody) streamResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body.reader())
	if err != nil {
		return streamResult{err: err.Error()}
	}
	req.ContentLength = body.len()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return streamResult{err: err.Error()}
	}
	defer resp.Body.Close()
	res := streamResult{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		res.err = strings.TrimSpace(string(b))
		return res
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Response string      `json:"response"`
			Message  api.Message `json:"message"`
			Done     bool        `json:"done"`
			Error    string      `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			res.err = "bad line: " + err.Error()
			return res
		}
		if line.Error != "" {
			res.err = line.Error
			return res
		}
		text.WriteString(line.Response + line.Message.Content)
		res.done = res.done || line.Done
	}
	if err := sc.Err(); err != nil {
		res.err = err.Error()
	}
	res.text = text.String()
	return res
}

// bigBody is a request body made of parts that requests share, so that
// sixty clients of 8 MiB bodies do not cost the test's process (which is
// also the dispatcher's, the workers' and the simulators') 480 MiB and the
// CPU to build them.
type bigBody struct{ parts []string }

func (b *bigBody) reader() io.Reader {
	rs := make([]io.Reader, len(b.parts))
	for i, p := range b.parts {
		rs[i] = strings.NewReader(p)
	}
	return io.MultiReader(rs...)
}

func (b *bigBody) len() int64 {
	var n int64
	for _, p := range b.parts {
		n += int64(len(p))
	}
	return n
}

// heapPeak samples the live heap of the whole test process every few
// milliseconds until stop is called, and returns the highest sample.
func heapPeak() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak }
}

// bodyGauges scrapes the dispatcher's body gauges every 200 ms until stop is
// called, and returns their highest values: bytes held, requests waiting.
func bodyGauges(ctx context.Context, url string) (stop func() (held, waiting int64)) {
	var maxHeld, maxWaiting float64
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil) // A valid URL always makes a request.
			if resp, err := http.DefaultClient.Do(req); err == nil {
				parser := expfmt.NewTextParser(model.UTF8Validation)
				families, err := parser.TextToMetricFamilies(resp.Body)
				resp.Body.Close()
				if err == nil {
					maxHeld = max(maxHeld, sum(families, "ollamamax_http_body_bytes_in_flight", nil))
					maxWaiting = max(maxWaiting, sum(families, "ollamamax_http_body_waiting", nil))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int64, int64) { cancel(); <-finished; return int64(maxHeld), int64(maxWaiting) }
}

// TestLargeRequestsWaitTheirTurn: 60 requests of almost 8 MiB each (a
// base64 image, the largest body the default NATS payload carries) come at
// once while ordinary answers stream. Every one of them gets its whole,
// right answer: none is run twice, redelivered or dead-lettered, no
// ordinary stream breaks, nobody gets 503, and the workers' connections
// are never cut as slow consumers. The large ones wait their turn: the
// dispatcher never holds more bodies than its budget. The peak heap of the
// whole process (server, dispatcher, workers and simulators together) is
// logged; the benchmark's "large" scenario measures the dispatcher's alone.
func TestLargeRequestsWaitTheirTurn(t *testing.T) {
	const (
		ordinary = 8
		maxBody  = 8<<20 - 4096 // What Run allows under the default 8 MiB max_payload.
	)
	const large = 60
	if raceEnabled {
		// The detector slows the decoding of these bodies tenfold: the
		// jobs outwait the queue. The other tests of the body budget and
		// of the pulls run the same code with the detector.
		t.Skip("moves 500 MiB through JSON decoders: run it without -race")
	}
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "llama3.2"}, {Name: "llava", Capabilities: []string{"completion", "vision"}}}
	sim.TokensPerSecond = 100
	sim.TimeToFirstToken = time.Millisecond
	sim.DefaultTokens = 10
	sim.Parallel = 16
	sim.MaxQueue = 256
	// What the simulators answer, from one that is not in the fleet and
	// does not pace its tokens.
	refSim := sim
	refSim.TokensPerSecond = -1
	ref := httptest.NewServer(ollamasim.New(refSim))
	t.Cleanup(ref.Close)

	// The image: random bytes, so that nothing compresses them, sized so
	// the body is just under the limit.
	raw := make([]byte, (maxBody-1024)/4*3)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(raw)
	image := base64.StdEncoding.EncodeToString(raw)
	chat := func(i int) *bigBody {
		return &bigBody{[]string{fmt.Sprintf(`{"model":"llava","stream":true,"messages":[{"role":"user","content":"describe picture %d","images":["`, i),
			image, `"]}]}`}}
	}
	if n := chat(large).len(); n > maxBody || n < maxBody-2048 {
		t.Fatalf("a large body has %d bytes, want just under %d", n, maxBody)
	}
	generate := func(i int) *bigBody {
		return &bigBody{[]string{fmt.Sprintf(`{"model":"llama3.2","prompt":"ordinary %d","options":{"num_predict":150}}`, i)}} // 1.5 s of tokens
	}

	// Every role and both simulators run in this one process, on the
	// test's cores, decoding 500 MiB of JSON: on a loaded machine its own
	// scheduling stalls for a few hundred milliseconds at times, so the
	// inventory checks get a 2 s heartbeat to answer in, and a started job
	// 2 s of silence before the dispatcher takes its worker for dead (750
	// ms by default). The benchmark's "large" scenario runs the processes
	// apart at the defaults, and counts stalls too.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 16, Sim: sim, MaxBody: maxBody, AckWait: 3 * time.Second,
		Heartbeat: 2 * time.Second, Stall: 2 * time.Second})
	ctx := t.Context()
	peak := heapPeak()
	bodies := bodyGauges(ctx, f.URL+"/metrics")
	var wg sync.WaitGroup
	ordinaryRes := make([]streamResult, 2*ordinary)
	largeRes := make([]streamResult, large)
	began := time.Now()
	for i := range ordinary {
		wg.Go(func() { ordinaryRes[i] = readStream(ctx, f.URL+"/api/generate", generate(i)) })
	}
	f.WaitFor("the ordinary streams to start", func() bool {
		var active int64
		for _, s := range f.Sims {
			active += s.Stats().Active
		}
		return active == ordinary
	})
	for i := range large {
		wg.Go(func() { largeRes[i] = readStream(ctx, f.URL+"/api/chat", chat(i)) })
	}
	for i := ordinary; i < 2*ordinary; i++ { // More ordinary answers while the large ones arrive.
		wg.Go(func() { ordinaryRes[i] = readStream(ctx, f.URL+"/api/generate", generate(i)) })
	}
	wg.Wait()
	took := time.Since(began)
	heap := peak()
	held, waiting := bodies()
	// The ordinary bodies are small: they are counted, but never wait.
	if limit := int64(dispatcher.DefaultBodyBudget + 2*ordinary*1024); held > limit {
		t.Errorf("the dispatcher held %d bytes of bodies at once, more than its budget (%d) and the small ones", held, int64(dispatcher.DefaultBodyBudget))
	}
	if waiting == 0 {
		t.Errorf("no large request was seen waiting for its turn under the body budget")
	}
	t.Logf("at most %d MiB of bodies held and %d requests waiting at once", held>>20, waiting)
	t.Logf("%d large requests (%d bytes each) and %d ordinary streams in %s; peak heap of the whole process %d MiB",
		large, chat(0).len(), 2*ordinary, took.Round(time.Millisecond), heap>>20)

	for i, res := range ordinaryRes {
		want := readStream(ctx, ref.URL+"/api/generate", generate(i))
		if res.status != http.StatusOK || res.err != "" || !res.done || res.text != want.text {
			t.Errorf("ordinary stream %d: status %d, error %q, done %v, text right %v", i, res.status, res.err, res.done, res.text == want.text)
		}
	}
	wantLarge := make([]streamResult, large)
	for i := range large { // Two at a time: the process has two cores.
		wg.Go(func() { wantLarge[i] = readStream(ctx, ref.URL+"/api/chat", chat(i)) })
		if i%2 == 1 {
			wg.Wait()
		}
	}
	wg.Wait()
	for i, res := range largeRes {
		switch {
		case res.status != http.StatusOK || res.err != "" || !res.done:
			t.Errorf("large request %d: status %d, error %q, done %v", i, res.status, res.err, res.done)
		case wantLarge[i].err != "" || wantLarge[i].text == "":
			t.Fatalf("the reference simulator's answer to large request %d: %+v", i, wantLarge[i])
		case res.text != wantLarge[i].text:
			t.Errorf("large request %d: answer %q, want %q", i, res.text, wantLarge[i].text)
		}
	}

	var runs int64
	for _, s := range f.Sims {
		runs += s.Stats().Requests
	}
	if want := int64(large + 2*ordinary); runs != want {
		t.Errorf("the simulators ran %d requests, want %d: some ran twice", runs, want)
	}
	for _, u := range f.WorkerMetricsURLs {
		fam := scrape(t, u)
		for _, name := range []string{"ollamamax_worker_job_redeliveries_total", "ollamamax_worker_jobs_dead_lettered_total",
			"ollamamax_worker_jobs_retried_total"} {
			if n := sum(fam, name, nil); n != 0 {
				t.Errorf("%s: %s = %v, want 0", u, name, n)
			}
		}
	}
	if n := sum(scrape(t, f.URL+"/metrics"), "ollamamax_jobs_stalled_total", nil); n != 0 {
		t.Errorf("the dispatcher NAKed %v silent jobs, want none", n)
	}
	dlq, err := f.Queue.JetStream().Stream(ctx, job.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d dead letters, want none", info.State.Msgs)
	}
	if n := f.Broker.Server().NumSlowConsumers(); n != 0 {
		t.Errorf("the server cut %d connections as slow consumers, want none", n)
	}
}
