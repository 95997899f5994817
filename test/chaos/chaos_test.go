// Package chaos_test runs real worker processes in front of simulated
// Ollamas, submits thousands of jobs through the dispatcher's HTTP API and as
// a NATS-native client, SIGKILLs a random worker every one to two seconds
// (and starts it again), restarts the nats-server once, and checks that every
// job ends exactly once at its requester, complete or with an explicit error,
// and that every completed answer, migrated or not, is byte-identical to an
// uninterrupted run. It runs twice: with NATS authentication off, and on
// (operator mode, every process on credentials of its role).
package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	workers     = 3
	slots       = 4
	httpJobs    = 1000
	nativeJobs  = 1000
	clients     = 24
	seed        = 7
	testTimeout = 4 * time.Minute
)

// outcome is what one job's requester saw.
type outcome struct {
	kind      string // "http-generate", "http-chat", "native"
	prompt    string
	text      strings.Builder
	terminals int    // done or error endings seen: must be exactly 1
	err       string // the explicit error, if it ended with one
	migrated  bool   // a worker continued it after another died (native only)
	stall     time.Duration
}

type chaos struct {
	t       *testing.T
	bin     string
	dir     string
	natsURL string
	sims    []string
	mu      sync.Mutex
	procs   []*exec.Cmd
	gen     int
	kills   atomic.Int64
	auth    *auth.Dir // nil with auth off

	vmu  sync.Mutex
	viol []string // permission violations on the test's requesters' connections
}

// TestChaos runs the chaos scenario with NATS authentication off and on.
// With auth on the server runs in operator mode from an auth directory of
// pkg/auth, its resolver under the store directory so that it survives the
// restart; the dispatcher connects with its dispatcher credentials, the
// NATS-native client with a client's, and each worker process with worker
// credentials of its own ID (--nats-creds). Any permission violation, on
// those connections or in a worker's log, fails the test.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: builds the worker and runs for about a minute per mode")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/ollamamax/ollamamax/cmd/worker").CombinedOutput(); err != nil {
		t.Fatalf("build worker: %v\n%s", err, out)
	}
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { runChaos(t, bin, m.Auth) })
	}
}

func runChaos(t *testing.T, bin string, withAuth bool) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	c := &chaos{t: t, dir: t.TempDir(), bin: bin}

	// The nats-server, on a fixed port and file store so it can restart.
	bcfg := broker.DefaultConfig(filepath.Join(c.dir, "js"))
	bcfg.Listen = "127.0.0.1:" + natstest.FreePort(t)
	dispatcherID, nativeID := "chaosd", "chaosn"
	if withAuth {
		var err error
		if c.auth, err = auth.Init(filepath.Join(c.dir, "auth")); err != nil {
			t.Fatal(err)
		}
		bcfg.AuthDir = c.auth.Path()
		dispatcherID = auth.DispatcherUser
		c.issue(nativeID, auth.Client)
	}
	b, err := broker.Start(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Shutdown() }()
	c.natsURL = "nats://" + bcfg.Listen

	sim := ollamasim.DefaultConfig()
	sim.Seed = seed
	sim.TokensPerSecond = 200
	sim.TimeToFirstToken = 5 * time.Millisecond
	sim.DefaultTokens = 10
	sim.Parallel = slots
	for range workers {
		hs := httptest.NewServer(ollamasim.New(sim))
		defer hs.Close()
		c.sims = append(c.sims, hs.URL)
	}
	ref := sim
	ref.TokensPerSecond, ref.TimeToFirstToken = -1, -1
	refSrv := httptest.NewServer(ollamasim.New(ref))
	defer refSrv.Close()

	for i := range workers {
		c.start(i)
	}
	defer c.stopAll()

	// The requesters: an HTTP dispatcher and a NATS-native client, each on
	// its own reconnecting TCP connection.
	connect := func(name, user string) *nats.Conn {
		opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond),
			nats.ReconnectBufSize(64 << 20)}
		if c.auth != nil {
			opts = append(opts, c.options(user)...)
		}
		nc, err := nats.Connect(c.natsURL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	dnc := connect("chaos-dispatcher", dispatcherID)
	js, err := jetstream.New(dnc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(ctx, js, queue.Options{AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// As dispatcher.Run does: the restarted server lost the node bucket.
	queue.ReapplyOnReconnect(ctx, dnc, queue.Options{AckWait: time.Second}, func(err error) { t.Logf("chaos: %v", err) })
	view, err := fleet.Watch(ctx, q.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = view.Run(ctx) }()
	dreq, err := queue.NewRequester(dnc, q, dispatcherID)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	shim, err := dispatcher.NewServer(q, dreq, view, dispatcher.Options{MaxBody: 1 << 20, QueueWait: time.Minute,
		Logger: fleettest.Logger(), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(shim)
	defer hs.Close()
	nnc := connect("chaos-native", nativeID)
	njs, err := jetstream.New(nnc)
	if err != nil {
		t.Fatal(err)
	}
	nq, err := queue.Open(ctx, njs)
	if err != nil {
		t.Fatal(err)
	}
	nreq, err := queue.NewRequester(nnc, nq, nativeID)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, 30*time.Second, "the workers to join", func() bool { return len(view.Nodes()) == workers })

	u, _ := url.Parse(hs.URL) // httptest URLs parse.
	ollama := api.NewClient(u, http.DefaultClient)
	jobs := make([]*outcome, 0, httpJobs+nativeJobs)
	for i := range httpJobs + nativeJobs {
		o := &outcome{prompt: fmt.Sprintf("job %d: tell me something", i)}
		switch {
		case i >= httpJobs:
			o.kind = "native"
		case i%2 == 0:
			o.kind = "http-generate"
		default:
			o.kind = "http-chat"
		}
		jobs = append(jobs, o)
	}
	rand.New(rand.NewPCG(seed, seed)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

	// Chaos: kill a random worker every 1-2s and start it again; restart the
	// nats-server once, a third of the way through.
	var finished atomic.Int64
	chaosDone := make(chan struct{})
	natsRestarts := 0
	go func() {
		defer close(chaosDone)
		r := rand.New(rand.NewPCG(seed, 1))
		for finished.Load() < int64(len(jobs)) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second + time.Duration(r.Int64N(int64(time.Second)))):
			}
			if natsRestarts == 0 && finished.Load() > int64(len(jobs)/3) {
				natsRestarts++
				b.Shutdown()
				nb, err := broker.Start(bcfg)
				if err != nil {
					t.Errorf("restart nats-server: %v", err)
					return
				}
				b = nb
				continue
			}
			c.kill(r.IntN(workers))
		}
	}()

	work := make(chan *outcome)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for o := range work {
				switch o.kind {
				case "native":
					runNative(ctx, nreq, o)
				default:
					runHTTP(ctx, ollama, o)
				}
				finished.Add(1)
			}
		})
	}
	started := time.Now()
	for _, o := range jobs {
		work <- o
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(started)
	<-chaosDone

	// Check every job against an uninterrupted run of the same request.
	ru, _ := url.Parse(refSrv.URL)
	refClient := api.NewClient(ru, http.DefaultClient)
	var lost, dup, failed, wrong, migrated int
	var stalls []time.Duration
	errs := map[string]int{}
	for _, o := range jobs {
		switch {
		case o.terminals == 0:
			lost++
			continue
		case o.terminals > 1:
			dup++
		}
		if o.err != "" {
			failed++
			errs[shorten(o.err)]++
			continue
		}
		if o.migrated {
			migrated++
			stalls = append(stalls, o.stall)
		}
		if want := reference(ctx, t, refClient, o); o.text.String() != want {
			wrong++
			if wrong <= 3 {
				t.Errorf("%s %q: got %q\nwant %q (migrated %v)", o.kind, o.prompt, o.text.String(), want, o.migrated)
			}
		}
	}
	resumed := counterValue(t, reg, "ollamamax_http_streams_resumed_total")
	slices.Sort(stalls)
	t.Logf("chaos: %d jobs (%d HTTP, %d NATS-native) in %s; %d worker kills and restarts, %d nats-server restart",
		len(jobs), httpJobs, nativeJobs, elapsed.Round(time.Millisecond), c.kills.Load(), natsRestarts)
	t.Logf("chaos: lost %d, duplicated %d, wrong text %d, explicit errors %d, migrated mid-stream %d NATS-native + %.0f HTTP",
		lost, dup, wrong, failed, migrated, resumed)
	if len(stalls) > 0 {
		t.Logf("chaos: failover stall seen by NATS-native clients: median %s, 99th percentile %s, max %s",
			stalls[len(stalls)/2].Round(time.Millisecond), stalls[len(stalls)*99/100].Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond))
	}
	for e, n := range errs {
		t.Logf("chaos: %d x %s", n, e)
	}
	if lost != 0 || dup != 0 || wrong != 0 {
		t.Errorf("lost %d, duplicated %d, wrong %d: want 0, 0, 0", lost, dup, wrong)
	}
	if c.kills.Load() < 3 || natsRestarts != 1 {
		t.Errorf("only %d kills and %d nats restarts: the run was too short to test anything", c.kills.Load(), natsRestarts)
	}
	if migrated+int(resumed) == 0 {
		t.Errorf("no job was continued after a kill: mid-stream migration was not exercised")
	}
	if withAuth {
		c.stopAll()
		for _, v := range c.violations() {
			t.Errorf("permission violation: %s", v)
		}
	}
}

// issue gives user name credentials of role r.
func (c *chaos) issue(name string, r auth.Role) string {
	path := c.auth.CredsPath(name)
	if _, _, err := c.auth.AddUser(name, auth.UserOptions{Role: r, CredsFile: path}); err != nil {
		c.t.Fatalf("auth add %s --role %s: %v", name, r, err)
	}
	return path
}

// options are the nats options of user name's credentials, recording the
// permission violations the server reports to the connection.
func (c *chaos) options(name string) []nats.Option {
	cr, err := auth.ReadCreds(c.auth.CredsPath(name))
	if err != nil {
		c.t.Fatal(err)
	}
	return append(cr.Options(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.vmu.Lock()
			defer c.vmu.Unlock()
			c.viol = append(c.viol, name+": "+err.Error())
		}
	}))
}

// violations are those of the requesters' connections and the lines of the
// workers' logs that report one (nats.go's default error handler, or the
// worker's own log of a refused request).
func (c *chaos) violations() []string {
	c.vmu.Lock()
	out := append([]string(nil), c.viol...)
	c.vmu.Unlock()
	logs, err := filepath.Glob(filepath.Join(c.dir, "worker-*.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			c.t.Fatal(err)
		}
		for line := range bytes.Lines(b) {
			if bytes.Contains(bytes.ToLower(line), []byte("permissions violation")) {
				out = append(out, filepath.Base(l)+": "+string(bytes.TrimSpace(line)))
			}
		}
	}
	return out
}

func runHTTP(ctx context.Context, c *api.Client, o *outcome) {
	jctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var err error
	if o.kind == "http-generate" {
		err = c.Generate(jctx, &api.GenerateRequest{Model: "llama3.2", Prompt: o.prompt}, func(r api.GenerateResponse) error {
			o.text.WriteString(r.Response)
			if r.Done {
				o.terminals++
			}
			return nil
		})
	} else {
		err = c.Chat(jctx, &api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: o.prompt}}},
			func(r api.ChatResponse) error {
				o.text.WriteString(r.Message.Content)
				if r.Done {
					o.terminals++
				}
				return nil
			})
	}
	if err != nil {
		o.terminals++
		o.err = err.Error()
	}
}

func runNative(ctx context.Context, req *queue.Requester, o *outcome) {
	jctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"model":"llama3.2","prompt":%q}`, o.prompt)
	st, err := req.Submit(jctx, queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Body: []byte(body), Wait: time.Minute})
	if err != nil {
		o.terminals++
		o.err = "submit: " + err.Error()
		return
	}
	defer st.Close()
	var lastData time.Time
	resumedAt := time.Time{}
	var text strings.Builder
	for {
		rep, err := st.Next(jctx)
		if err != nil {
			return // No ending at all: counted as lost.
		}
		switch rep.Kind {
		case job.KindStart:
			if rep.Resumed > 0 {
				o.migrated = true
				resumedAt = lastData
			}
		case job.KindData:
			if !resumedAt.IsZero() && o.stall == 0 {
				o.stall = time.Since(resumedAt)
			}
			lastData = time.Now()
			var chunk api.GenerateResponse
			if err := json.Unmarshal(rep.Data, &chunk); err == nil {
				text.WriteString(chunk.Response)
			}
		case job.KindDone:
			o.terminals++
			o.text.WriteString(text.String())
			return
		case job.KindError:
			o.terminals++
			o.err = rep.Error
			return
		}
	}
}

// reference is the answer an uninterrupted run gives to the same request.
func reference(ctx context.Context, t *testing.T, c *api.Client, o *outcome) string {
	var b strings.Builder
	var err error
	if o.kind == "http-chat" {
		err = c.Chat(ctx, &api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: o.prompt}}},
			func(r api.ChatResponse) error { b.WriteString(r.Message.Content); return nil })
	} else {
		err = c.Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: o.prompt},
			func(r api.GenerateResponse) error { b.WriteString(r.Response); return nil })
	}
	if err != nil {
		t.Fatalf("reference run: %v", err)
	}
	return b.String()
}

// start runs worker i (again) as a process.
func (c *chaos) start(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	log, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("worker-%d-%d.log", i, c.gen)))
	if err != nil {
		c.t.Fatal(err)
	}
	id := fmt.Sprintf("chaos-w%d-%d", i, c.gen)
	var creds []string
	if c.auth != nil {
		// Each process its own ID, as before: credentials of that name.
		creds = []string{"--nats-creds", c.issue(id, auth.Worker)}
	}
	cmd := exec.Command(c.bin, append(creds, "--nats-url", c.natsURL, "--ollama", c.sims[i], "--slots", fmt.Sprint(slots),
		"--id", id, "--ack-wait", "1s", "--heartbeat", "500ms", "--grace", "1s",
		"--listen", "", "--log-format", "json", "--log-level", "info")...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for len(c.procs) <= i {
		c.procs = append(c.procs, nil)
	}
	c.procs[i] = cmd
}

// kill SIGKILLs worker i and starts a new process in its place.
func (c *chaos) kill(i int) {
	c.mu.Lock()
	p := c.procs[i]
	c.mu.Unlock()
	if p != nil {
		_ = p.Process.Signal(syscall.SIGKILL) // It may have died already.
		_ = p.Wait()                          // Reaps it; the exit status is the kill.
	}
	c.kills.Add(1)
	c.start(i)
}

// stopAll SIGKILLs every worker. It is idempotent.
func (c *chaos) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.procs {
		if p != nil {
			_ = p.Process.Signal(syscall.SIGKILL) // End of test.
			_ = p.Wait()
			c.procs[i] = nil
		}
	}
}

// counterValue reads a counter without labels from a registry.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// jobIDs matches job IDs, so that errors that differ only by job group.
var jobIDs = regexp.MustCompile(`\b[0-9a-v]{26}\b`)

func shorten(s string) string {
	s = jobIDs.ReplaceAllString(s, "<job>")
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
