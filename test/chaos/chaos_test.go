// Package chaos_test runs real worker and dispatcher processes in front of
// simulated Ollamas, submits thousands of jobs through the dispatcher's HTTP
// API (generate and chat, streamed) and as a NATS-native client, and injects
// faults on a schedule it records with timestamps: a random worker SIGKILLed
// every one to two seconds (and started again), a worker SIGSTOPped for
// longer than the ack wait (then SIGCONTed), the job stream's leader shut
// down and started again (on a three-node cluster with R3 streams), the
// dispatcher SIGKILLed and started again on the same address, and a
// nats-server restarted.
//
// It checks that every job ends exactly once at its requester; that none is
// lost or answered twice; that every completed answer, migrated or not, is
// byte-identical to an uninterrupted run; that every explicit error is of a
// kind some fault explains (errKinds) and happened within that fault's
// window; and it bounds the share of errors and the failover stall of the
// jobs a worker died or hung under.
//
// Two scenarios: the full one on a three-node cluster in operator mode (every
// process on credentials of its role), and a shorter one on a single server
// with authentication off.
package chaos_test

import (
	"bufio"
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
	"runtime"
	"slices"
	"strconv"
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
	"github.com/ollamamax/ollamamax/internal/natscluster"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const (
	workers = 3
	slots   = 4
	clients = 24
	seed    = 7
	// ackWait is every process's ack wait. The hung worker stays stopped for
	// hangFor, longer than it: its jobs must continue elsewhere before
	// JetStream would redeliver them, through heartbeats and the
	// dispatcher's stall NAK.
	ackWait = 2 * time.Second
	hangFor = 2*ackWait + time.Second
	// downFor is how long a shut-down stream leader, nats-server or
	// dispatcher stays down.
	downFor = 2 * time.Second
	// jobStream is the stream whose leader the cluster scenario shuts down.
	jobStream = "OLLAMAQ_JOBS"
	// spacing separates the faults other than worker kills.
	spacing = hangFor + 2*time.Second
	// tokens is the length of every answer: at 200 tokens/s, 150 ms.
	tokens = 30
	// maxErrorShare bounds explicit errors: at most this share of all jobs.
	maxErrorShare = 0.02
)

// scenario is one run: where NATS runs, auth, how many jobs of each kind.
type scenario struct {
	name                 string
	cluster, auth        bool
	httpJobs, nativeJobs int
	timeout              time.Duration
}

var scenarios = []scenario{
	// The full scenario: ≥ 5,000 jobs, every fault, R3 streams, operator mode.
	{name: "cluster_auth_on", cluster: true, auth: true, httpJobs: 3000, nativeJobs: 2000, timeout: 9 * time.Minute},
	// Shorter: one server, no auth, every fault but the leader's.
	{name: "single_auth_off", httpJobs: 1200, nativeJobs: 800, timeout: 4 * time.Minute},
}

// outcome is what one job's requester saw.
type outcome struct {
	n        int
	kind     string // "http-generate", "http-chat", "native"
	prompt   string
	text     strings.Builder
	terminal int // done or error endings seen: must be exactly 1
	err      string
	errAt    time.Time
	sent     time.Time
	end      time.Time
	refused  int  // HTTP attempts refused at connect (dispatcher down): retried, never accepted
	migrated bool // a worker continued it after another died (native: Ollamaq-Resumed)
	// gap is the longest silence between two chunks, and gapAt when it
	// ended: a migration or a NATS fault shows as one long gap.
	gap   time.Duration
	gapAt time.Time
}

// fault is one injected fault, from start to end (when what was down is
// back, or the hung process continues).
type fault struct {
	kind       string // worker-kill, worker-hang, leader-kill, dispatcher-kill, nats-restart
	target     string
	start, end time.Time
}

// recovery is how long after a fault's end its effects may still show as an
// error: reconnects, publishes that time out (the queue's publish timeout),
// deliveries counted out, a cluster's stream catching up.
var recovery = map[string]time.Duration{
	"worker-kill":     ackWait + 2*time.Second,
	"worker-hang":     ackWait + 2*time.Second,
	"leader-kill":     15 * time.Second,
	"nats-restart":    15 * time.Second,
	"dispatcher-kill": 2 * time.Second,
}

// errKind is an explicit error a client may see, and the faults that explain it.
type errKind struct {
	name   string
	re     *regexp.Regexp
	faults []string
}

// errKinds are the only explicit errors allowed, each only around a fault
// of the kinds it names.
var errKinds = []errKind{
	// The dispatcher died under an HTTP request in flight: the connection is
	// reset or ends early. The client's own request; the job is dropped by
	// its worker, whose liveness probe finds the requester gone.
	{"connection to the dispatcher lost", regexp.MustCompile(`connection reset by peer|EOF|broken pipe|server closed|connection refused`),
		[]string{"dispatcher-kill"}},
	// JetStream did not answer a publish while a server or the stream's
	// leader was down or electing: the dispatcher's 503, a NATS-native
	// client's submit error.
	{"queue unavailable", regexp.MustCompile(`^503 Service Unavailable: queue unavailable: |^submit: `),
		[]string{"nats-restart", "leader-kill"}},
	// A requester's connection was interrupted mid-answer and the server
	// dropped reply messages: the requester ends the answer explicitly.
	{"lost reply messages", regexp.MustCompile(`lost reply messages \d+ to (\d+|the end) of attempt \d+ \(NATS connection interrupted\)`),
		[]string{"nats-restart", "leader-kill"}},
	// Every delivery of the job went to a worker that died or hung.
	{"dead-lettered", regexp.MustCompile(`the workers that took it died or hung`),
		[]string{"worker-kill", "worker-hang"}},
}

// margin is how long before a fault an error it explains may show: the
// fault's timestamp is taken just before the signal or shutdown.
const margin = 250 * time.Millisecond

type proc struct {
	cmd  *exec.Cmd
	id   string
	hung bool
}

type chaos struct {
	t    *testing.T
	sc   scenario
	bins map[string]string
	dir  string
	sims []string
	auth *auth.Dir // nil with auth off

	// NATS: a cluster, or one server.
	cl   *natscluster.Cluster
	bcfg broker.Config
	bmu  sync.Mutex
	b    *broker.Broker

	mu    sync.Mutex
	procs []*proc
	gen   int
	disp  *exec.Cmd
	dgen  int
	kills atomic.Int64

	httpAddr string
	resumed  atomic.Int64 // dispatcher's streams resumed, summed over its incarnations
	lastRes  atomic.Int64 // the running dispatcher's counter at its last scrape
	stalled  atomic.Int64 // dispatcher's stall NAKs, likewise
	lastSt   atomic.Int64

	fmu    sync.Mutex
	faults []fault

	vmu  sync.Mutex
	viol []string // permission violations on the test's own connections
}

// TestChaos runs each scenario.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: builds the worker and the dispatcher and runs for minutes")
	}
	bins := map[string]string{}
	for _, name := range []string{"worker", "dispatcher"} {
		bins[name] = filepath.Join(t.TempDir(), name)
		if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bins[name], "github.com/ollamamax/ollamamax/cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runChaos(t, bins, sc) })
	}
}

func runChaos(t *testing.T, bins map[string]string, sc scenario) {
	ctx, cancel := context.WithTimeout(t.Context(), sc.timeout)
	defer cancel()
	c := &chaos{t: t, sc: sc, dir: t.TempDir(), bins: bins}
	nativeID, watchID := "chaosn", "chaosw"
	if sc.auth {
		var err error
		if c.auth, err = auth.Init(filepath.Join(c.dir, "auth")); err != nil {
			t.Fatal(err)
		}
		c.issue(nativeID, auth.Client)
		c.issue(watchID, auth.Dispatcher)
	}
	if sc.cluster {
		o := natscluster.Options{}
		if c.auth != nil {
			o.AuthDir = c.auth.Path()
		}
		c.cl = natscluster.Start(t, o)
	} else {
		c.bcfg = broker.DefaultConfig(filepath.Join(c.dir, "js"))
		c.bcfg.Listen = "127.0.0.1:" + natstest.FreePort(t)
		if c.auth != nil {
			c.bcfg.AuthDir = c.auth.Path()
		}
		b, err := broker.Start(c.bcfg)
		if err != nil {
			t.Fatal(err)
		}
		c.b = b
		defer func() {
			c.bmu.Lock()
			defer c.bmu.Unlock()
			c.b.Shutdown()
		}()
	}

	sim := ollamasim.DefaultConfig()
	sim.Seed = seed
	sim.TokensPerSecond = 200
	sim.TimeToFirstToken = 5 * time.Millisecond
	sim.DefaultTokens = tokens
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

	// The dispatcher first: it applies the streams (R3 on the cluster),
	// which workers with worker credentials only bind to.
	c.httpAddr = "127.0.0.1:" + natstest.FreePort(t)
	c.startDispatcher()
	defer c.stopAll()
	for i := range workers {
		c.start(i)
	}

	// The test's own connections: a NATS-native client, and a watcher of
	// the node bucket to know when the workers are up.
	wnc := c.connect("chaos-watch", watchID, 2)
	wq, err := openQueue(ctx, wnc)
	if err != nil {
		t.Fatal(err)
	}
	view, err := fleet.Watch(ctx, wq.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = view.Run(ctx) }()
	nnc := c.connect("chaos-native", nativeID, 1)
	njs, err := jetstream.New(nnc)
	if err != nil {
		t.Fatal(err)
	}
	// The client role may read only the job stream: Open, not Setup.
	nq, err := queue.Open(ctx, njs)
	if err != nil {
		t.Fatal(err)
	}
	nreq, err := queue.NewRequester(nnc, nq, nativeID)
	if err != nil {
		t.Fatal(err)
	}
	if sc.auth {
		// The client role may not publish on ack subjects
		// (docs/protocol.md, "Heartbeats"): a NATS-native client fails over
		// at the ack wait.
		nreq.SetStall(0, nil)
	}
	fleettest.WaitFor(t, 30*time.Second, "the workers to join", func() bool { return len(view.Nodes()) == workers })
	c.waitDispatcher(ctx)

	u, _ := url.Parse("http://" + c.httpAddr) // A host:port parses.
	ollama := api.NewClient(u, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}})
	jobs := make([]*outcome, 0, sc.httpJobs+sc.nativeJobs)
	for i := range sc.httpJobs + sc.nativeJobs {
		o := &outcome{n: i, prompt: fmt.Sprintf("job %d: tell me something", i)}
		switch {
		case i >= sc.httpJobs:
			o.kind = "native"
		case i%2 == 0:
			o.kind = "http-generate"
		default:
			o.kind = "http-chat"
		}
		jobs = append(jobs, o)
	}
	rand.New(rand.NewPCG(seed, seed)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

	var finished atomic.Int64
	started := time.Now()
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		c.schedule(ctx, &finished, int64(len(jobs)))
	}()

	work := make(chan *outcome)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for o := range work {
				o.sent = time.Now()
				switch o.kind {
				case "native":
					runNative(ctx, nreq, o)
				default:
					runHTTP(ctx, ollama, o)
				}
				o.end = time.Now()
				finished.Add(1)
			}
		})
	}
	for _, o := range jobs {
		work <- o
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(started)
	<-chaosDone
	c.scrape() // The last incarnation's counters.

	// Check every job against an uninterrupted run of the same request, and
	// every error against the faults.
	ru, _ := url.Parse(refSrv.URL)
	refClient := api.NewClient(ru, http.DefaultClient)
	faults := c.faultList()
	var lost, dup, failed, wrong, migrated, refused, unexplained int
	var nativeStalls, httpStalls []time.Duration
	kinds := map[string]int{}
	for _, o := range jobs {
		refused += o.refused
		switch {
		case o.terminal == 0:
			lost++
			t.Errorf("lost: %s job %d %q: no ending (text so far %q)", o.kind, o.n, o.prompt, o.text.String())
			continue
		case o.terminal > 1:
			dup++
			t.Errorf("duplicated: %s job %d %q ended %d times", o.kind, o.n, o.prompt, o.terminal)
		}
		if o.err != "" {
			failed++
			kind, ok := explain(o, faults)
			kinds[kind]++
			if !ok {
				unexplained++
				t.Errorf("unexplained error: %s job %d %q at %s (sent %s): %q; %s", o.kind, o.n, o.prompt,
					c.at(started, o.errAt), c.at(started, o.sent), o.err, nearest(o.errAt, faults, started))
			}
			continue
		}
		if o.migrated {
			migrated++
		}
		// A long silence a worker's failure explains is a failover stall;
		// one a NATS or dispatcher fault overlaps is not the workers'.
		if o.gap >= 300*time.Millisecond && onlyWorkerFaults(o.gapAt.Add(-o.gap), o.gapAt, faults) {
			if o.kind == "native" {
				nativeStalls = append(nativeStalls, o.gap)
			} else {
				httpStalls = append(httpStalls, o.gap)
			}
		}
		if want := reference(ctx, t, refClient, o); o.text.String() != want {
			wrong++
			if wrong <= 3 {
				t.Errorf("wrong text: %s job %d %q: got %q\nwant %q (migrated %v)", o.kind, o.n, o.prompt, o.text.String(), want, o.migrated)
			}
		}
	}

	// The longest time in which no job ended: how long the fleet stalled.
	ends := make([]time.Time, 0, len(jobs))
	for _, o := range jobs {
		ends = append(ends, o.end)
	}
	slices.SortFunc(ends, time.Time.Compare)
	var idle time.Duration
	var idleAt time.Time
	for i := 1; i < len(ends); i++ {
		if d := ends[i].Sub(ends[i-1]); d > idle {
			idle, idleAt = d, ends[i-1]
		}
	}
	t.Logf("chaos %s: longest time no job ended: %s, from %s (%s)", sc.name, idle.Round(time.Millisecond), c.at(started, idleAt), nearest(idleAt, faults, started))
	t.Cleanup(func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "chaos-logs-"+sc.name)
			_ = os.RemoveAll(keep)
			if err := os.CopyFS(keep, os.DirFS(c.dir)); err == nil {
				t.Logf("chaos %s: process logs kept in %s", sc.name, keep)
			}
		}
	})

	count := map[string]int{}
	for _, f := range faults {
		count[f.kind]++
	}
	t.Logf("chaos %s: %d jobs (%d HTTP, %d NATS-native) in %s on %d CPUs; faults: %d worker kills, %d worker hung %s, %d leader kills, %d dispatcher kills, %d nats-server restarts",
		sc.name, len(jobs), sc.httpJobs, sc.nativeJobs, elapsed.Round(time.Millisecond), runtime.NumCPU(),
		count["worker-kill"], count["worker-hang"], hangFor, count["leader-kill"], count["dispatcher-kill"], count["nats-restart"])
	for _, f := range faults {
		if f.kind != "worker-kill" {
			t.Logf("chaos %s: fault %-15s %-28s %s .. %s", sc.name, f.kind, f.target, c.at(started, f.start), c.at(started, f.end))
		}
	}
	t.Logf("chaos %s: lost %d, duplicated %d, wrong text %d, explicit errors %d (%.2f%%, %d unexplained), HTTP connects refused and retried %d",
		sc.name, lost, dup, wrong, failed, 100*float64(failed)/float64(len(jobs)), unexplained, refused)
	t.Logf("chaos %s: continued after a worker died or hung: %d NATS-native, %d HTTP (dispatcher's resumed counter), %d stall NAKs",
		sc.name, migrated, c.resumed.Load(), c.stalled.Load())
	logStalls(t, sc.name+": failover stall, HTTP", httpStalls)
	logStalls(t, sc.name+": failover stall, NATS-native", nativeStalls)
	for k, n := range kinds {
		t.Logf("chaos %s: %d x %s", sc.name, n, k)
	}

	if lost != 0 || dup != 0 || wrong != 0 || unexplained != 0 {
		t.Errorf("lost %d, duplicated %d, wrong %d, unexplained errors %d: want 0, 0, 0, 0", lost, dup, wrong, unexplained)
	}
	if limit := int(maxErrorShare * float64(len(jobs))); failed > limit {
		t.Errorf("%d explicit errors: want at most %d (%.0f%% of %d jobs)", failed, limit, 100*maxErrorShare, len(jobs))
	}
	want := map[string]int{"worker-kill": 3, "worker-hang": 1, "dispatcher-kill": 1, "nats-restart": 1}
	if sc.cluster {
		want["leader-kill"] = 1
	}
	for k, n := range want {
		if count[k] < n {
			t.Errorf("only %d %s faults, want at least %d: the run was too short to test them", count[k], k, n)
		}
	}
	if migrated == 0 || c.resumed.Load() == 0 {
		t.Errorf("continued after a kill: %d NATS-native, %d HTTP: mid-stream migration was not exercised on both", migrated, c.resumed.Load())
	}
	// HTTP jobs fail over through heartbeats and the dispatcher's stall NAK,
	// well before the ack wait; NATS-native ones with auth on at the ack
	// wait (the client role may not NAK).
	if len(httpStalls) > 0 {
		if p50, worst := httpStalls[len(httpStalls)/2], httpStalls[len(httpStalls)-1]; p50 > 1500*time.Millisecond || worst > ackWait+time.Second {
			t.Errorf("HTTP failover stall p50 %s, max %s: want ≤ 1.5s and ≤ %s", p50, worst, ackWait+time.Second)
		}
	}
	if len(nativeStalls) > 0 {
		if worst := nativeStalls[len(nativeStalls)-1]; worst > 2*ackWait+time.Second {
			t.Errorf("NATS-native failover stall max %s: want ≤ %s", worst, 2*ackWait+time.Second)
		}
	}
	c.stopAll()
	if sc.auth {
		for _, v := range c.violations() {
			t.Errorf("permission violation: %s", v)
		}
	}
}

// schedule injects the faults until every job finished: a worker kill every
// one to two seconds, and once each, spacing apart, the hung worker, the
// leader's shutdown (cluster), the dispatcher's kill and a nats-server
// restart. Time, not progress, places them: the errors of one fault must
// not be taken for another's.
func (c *chaos) schedule(ctx context.Context, finished *atomic.Int64, total int64) {
	r := rand.New(rand.NewPCG(seed, 1))
	plan := []string{"worker-hang", "leader-kill", "dispatcher-kill", "nats-restart"}
	if !c.sc.cluster {
		plan = slices.DeleteFunc(plan, func(s string) bool { return s == "leader-kill" })
	}
	var hangs sync.WaitGroup
	defer hangs.Wait()
	next := time.Now().Add(2 * time.Second)
	for finished.Load() < total && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second + time.Duration(r.Int64N(int64(time.Second)))):
		}
		if len(plan) > 0 && time.Now().After(next) {
			kind := plan[0]
			plan = plan[1:]
			switch kind {
			case "worker-hang":
				w := r.IntN(workers) // r is this goroutine's
				hangs.Go(func() { c.hang(w) })
			case "leader-kill":
				c.killLeader()
			case "dispatcher-kill":
				c.killDispatcher()
			case "nats-restart":
				c.restartNATS()
			}
			next = time.Now().Add(spacing)
			continue
		}
		c.kill(r.IntN(workers))
	}
}

func (c *chaos) record(f fault) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.faults = append(c.faults, f)
}

func (c *chaos) faultList() []fault {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return slices.Clone(c.faults)
}

// explain names the error's kind and tells whether a fault of a kind that
// explains it was on within its window.
func explain(o *outcome, faults []fault) (string, bool) {
	for _, k := range errKinds {
		if !k.re.MatchString(o.err) {
			continue
		}
		for _, f := range faults {
			if slices.Contains(k.faults, f.kind) && !o.errAt.Before(f.start.Add(-margin)) && !o.errAt.After(f.end.Add(recovery[f.kind])) {
				return k.name, true
			}
		}
		return k.name + " (no fault explains it)", false
	}
	return "not an allowed kind: " + shorten(o.err), false
}

// onlyWorkerFaults tells whether every fault that overlaps [from, to] is a
// worker's, and one does.
func onlyWorkerFaults(from, to time.Time, faults []fault) bool {
	worker := false
	for _, f := range faults {
		if f.start.Add(-margin).After(to) || f.end.Add(recovery[f.kind]).Before(from) {
			continue
		}
		if f.kind != "worker-kill" && f.kind != "worker-hang" {
			return false
		}
		worker = true
	}
	return worker
}

// nearest describes the fault closest in time to at.
func nearest(at time.Time, faults []fault, started time.Time) string {
	best, bestD := -1, time.Duration(1<<62)
	for i, f := range faults {
		d := max(f.start.Sub(at), at.Sub(f.end), 0)
		if d < bestD {
			best, bestD = i, d
		}
	}
	if best < 0 {
		return "no fault at all"
	}
	f := faults[best]
	return fmt.Sprintf("nearest fault: %s %s from %s to %s (%s away)", f.kind, f.target,
		f.start.Sub(started).Round(time.Millisecond), f.end.Sub(started).Round(time.Millisecond), bestD.Round(time.Millisecond))
}

func (c *chaos) at(started, t time.Time) string {
	return "+" + t.Sub(started).Round(time.Millisecond).String()
}

func logStalls(t *testing.T, what string, d []time.Duration) {
	if len(d) == 0 {
		t.Logf("chaos %s: none", what)
		return
	}
	slices.Sort(d)
	t.Logf("chaos %s: %d jobs, p50 %s, p99 %s, max %s", what, len(d), d[len(d)/2].Round(time.Millisecond),
		d[len(d)*99/100].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}

// openQueue binds to the streams the dispatcher applied, waiting for them.
func openQueue(ctx context.Context, nc *nats.Conn) (*queue.Queue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return queue.Setup(ctx, js, queue.Options{BindOnly: true})
}

// urls is the server list for a process on NATS node i (any i on a single server).
func (c *chaos) urls(i int) string {
	if c.cl != nil {
		return c.cl.URLs(i % len(c.cl.Nodes()))
	}
	return "nats://" + c.bcfg.Listen
}

// connect opens one of the test's own connections, to node node.
func (c *chaos) connect(name, user string, node int) *nats.Conn {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20), nats.DontRandomize()}
	if c.auth != nil {
		opts = append(opts, c.options(user)...)
	}
	nc, err := nats.Connect(c.urls(node), opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
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

// violations are those of the test's connections and the lines of the
// processes' logs that report one.
func (c *chaos) violations() []string {
	c.vmu.Lock()
	out := append([]string(nil), c.viol...)
	c.vmu.Unlock()
	logs, err := filepath.Glob(filepath.Join(c.dir, "*.log"))
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

// runHTTP runs one job through the dispatcher. A connection refused before
// anything was sent (the dispatcher is down) is retried: nothing was
// accepted. Any other error ends the job.
func runHTTP(ctx context.Context, c *api.Client, o *outcome) {
	jctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		var last time.Time
		chunk := func(s string, done bool) {
			now := time.Now()
			if !last.IsZero() && now.Sub(last) > o.gap {
				o.gap, o.gapAt = now.Sub(last), now
			}
			last = now
			o.text.WriteString(s)
			if done {
				o.terminal++
			}
		}
		var err error
		if o.kind == "http-generate" {
			err = c.Generate(jctx, &api.GenerateRequest{Model: "llama3.2", Prompt: o.prompt}, func(r api.GenerateResponse) error {
				chunk(r.Response, r.Done)
				return nil
			})
		} else {
			err = c.Chat(jctx, &api.ChatRequest{Model: "llama3.2", Messages: []api.Message{{Role: "user", Content: o.prompt}}},
				func(r api.ChatResponse) error {
					chunk(r.Message.Content, r.Done)
					return nil
				})
		}
		if err != nil && errors.Is(err, syscall.ECONNREFUSED) && o.text.Len() == 0 && jctx.Err() == nil {
			o.refused++
			select {
			case <-jctx.Done():
			case <-time.After(50 * time.Millisecond): // A client's backoff while the dispatcher restarts.
			}
			continue
		}
		if err != nil {
			o.terminal++
			o.err, o.errAt = err.Error(), time.Now()
		}
		return
	}
}

func runNative(ctx context.Context, req *queue.Requester, o *outcome) {
	jctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"model":"llama3.2","prompt":%q}`, o.prompt)
	st, err := req.Submit(jctx, queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Body: []byte(body), Wait: time.Minute})
	if err != nil {
		o.terminal++
		o.err, o.errAt = "submit: "+err.Error(), time.Now()
		return
	}
	defer st.Close()
	var last time.Time
	var text strings.Builder
	// As ollamaq run follows a job: Follow NAKs a silent worker's delivery
	// where the role may, and has lost replies continued.
	err = st.Follow(jctx, time.Minute+5*time.Second, 0, func(rep job.Reply) bool {
		switch rep.Kind {
		case job.KindStart:
			if rep.Resumed > 0 {
				o.migrated = true
			}
		case job.KindData:
			now := time.Now()
			if !last.IsZero() && now.Sub(last) > o.gap {
				o.gap, o.gapAt = now.Sub(last), now
			}
			last = now
			var chunk api.GenerateResponse
			if err := json.Unmarshal(rep.Data, &chunk); err == nil {
				text.WriteString(chunk.Response)
			}
		case job.KindDone:
			o.terminal++
			o.text.WriteString(text.String())
			return false
		case job.KindError:
			o.terminal++
			o.err, o.errAt = rep.Error, time.Now()
			return false
		}
		return true
	})
	if err != nil && o.terminal == 0 && jctx.Err() == nil {
		// Follow's own ending (no worker started it in time): explicit.
		o.terminal++
		o.err, o.errAt = "follow: "+err.Error(), time.Now()
	}
	// No ending at all (jctx's deadline): counted as lost.
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

// start runs worker i (again) as a process, on NATS node i+1.
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
	cmd := exec.Command(c.bins["worker"], append(creds, "--nats-url", c.urls(i+1), "--ollama", c.sims[i], "--slots", fmt.Sprint(slots),
		"--id", id, "--ack-wait", ackWait.String(), "--heartbeat", "500ms", "--grace", "1s",
		"--listen", "", "--log-format", "json", "--log-level", "info")...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for len(c.procs) <= i {
		c.procs = append(c.procs, nil)
	}
	c.procs[i] = &proc{cmd: cmd, id: id}
}

// kill SIGKILLs worker i and starts a new process in its place, unless it
// is the hung one.
func (c *chaos) kill(i int) {
	c.mu.Lock()
	p := c.procs[i]
	hung := p != nil && p.hung
	c.mu.Unlock()
	if p == nil || hung {
		return
	}
	f := fault{kind: "worker-kill", target: p.id, start: time.Now()}
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // It may have died already.
	_ = p.cmd.Wait()                          // Reaps it; the exit status is the kill.
	c.kills.Add(1)
	c.start(i)
	f.end = time.Now()
	c.record(f)
}

// hang SIGSTOPs worker i for hangFor, longer than the ack wait, and then
// SIGCONTs it: its jobs must have continued elsewhere, and it must leave
// them when it wakes.
func (c *chaos) hang(i int) {
	c.mu.Lock()
	p := c.procs[i]
	if p != nil {
		p.hung = true
	}
	c.mu.Unlock()
	if p == nil {
		return
	}
	f := fault{kind: "worker-hang", target: p.id, start: time.Now()}
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(hangFor) // The fault's length, not a wait for something.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	f.end = time.Now()
	c.record(f)
	c.mu.Lock()
	p.hung = false
	c.mu.Unlock()
}

// killLeader shuts down the node that leads the job stream, keeps it down
// for downFor, starts it again and waits for the cluster to be ready.
func (c *chaos) killLeader() {
	leader := c.cl.WaitStreamLeader(jobStream)
	f := fault{kind: "leader-kill", target: c.cl.Node(leader).Name + " (leader of " + jobStream + ")", start: time.Now()}
	c.cl.Shutdown(leader)
	time.Sleep(downFor) // The fault's length.
	c.cl.Restart(leader)
	c.cl.Ready()
	f.end = time.Now()
	c.record(f)
}

// restartNATS restarts the nats-server the dispatcher is connected to (node
// 0 of a cluster, or the only one).
func (c *chaos) restartNATS() {
	f := fault{kind: "nats-restart", start: time.Now()}
	if c.cl != nil {
		f.target = c.cl.Node(0).Name
		c.cl.Shutdown(0)
		time.Sleep(downFor) // The fault's length.
		c.cl.Restart(0)
		c.cl.Ready()
	} else {
		f.target = c.bcfg.Listen
		c.bmu.Lock()
		c.b.Shutdown()
		time.Sleep(downFor) // The fault's length.
		nb, err := broker.Start(c.bcfg)
		if err != nil {
			c.bmu.Unlock()
			c.t.Errorf("restart nats-server: %v", err)
			return
		}
		c.b = nb
		c.bmu.Unlock()
	}
	f.end = time.Now()
	c.record(f)
}

// startDispatcher runs the dispatcher (again) as a process on c.httpAddr,
// connected to NATS node 0.
func (c *chaos) startDispatcher() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dgen++
	log, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("dispatcher-%d.log", c.dgen)))
	if err != nil {
		c.t.Fatal(err)
	}
	replicas := "1"
	if c.cl != nil {
		replicas = "3"
	}
	args := []string{"--nats-url", c.urls(0), "--listen", c.httpAddr, "--ack-wait", ackWait.String(), "--replicas", replicas,
		"--queue-wait", "1m", "--max-body", "1048576", "--log-format", "json", "--log-level", "info"}
	if c.auth != nil {
		args = append(args, "--nats-creds", c.auth.CredsPath(auth.DispatcherUser))
	} else {
		args = append(args, "--id", "chaosd")
	}
	cmd := exec.Command(c.bins["dispatcher"], args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.disp = cmd
	c.lastRes.Store(0)
	c.lastSt.Store(0)
}

// waitDispatcher waits until the dispatcher answers /readyz.
func (c *chaos) waitDispatcher(ctx context.Context) {
	fleettest.WaitFor(c.t, 30*time.Second, "the dispatcher to be ready", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.httpAddr+"/readyz", nil) // A fixed URL.
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close() // Only the status matters.
		return resp.StatusCode == http.StatusOK
	})
}

// killDispatcher SIGKILLs the dispatcher (its HTTP connections reset, its
// NATS connection drops undrained), keeps it down for downFor and starts a
// new one on the same address and requester ID.
func (c *chaos) killDispatcher() {
	c.scrape()
	c.mu.Lock()
	d := c.disp
	c.mu.Unlock()
	f := fault{kind: "dispatcher-kill", target: "dispatcher on " + c.httpAddr, start: time.Now()}
	_ = d.Process.Signal(syscall.SIGKILL)
	_ = d.Wait() // The exit status is the kill.
	time.Sleep(downFor)
	c.startDispatcher()
	c.waitDispatcher(c.t.Context())
	f.end = time.Now()
	c.record(f)
}

// scrape adds what the running dispatcher's counters gained since the last
// scrape to the totals of all its incarnations.
func (c *chaos) scrape() {
	resp, err := http.Get("http://" + c.httpAddr + "/metrics")
	if err != nil {
		c.t.Logf("chaos: scrape the dispatcher: %v", err)
		return
	}
	defer func() { _ = resp.Body.Close() }() // Read to the end below.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch name {
		case "ollamamax_http_streams_resumed_total":
			c.resumed.Add(int64(n) - c.lastRes.Swap(int64(n)))
		case "ollamamax_jobs_stalled_total":
			c.stalled.Add(int64(n) - c.lastSt.Swap(int64(n)))
		}
	}
}

// stopAll SIGKILLs every process. It is idempotent.
func (c *chaos) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.procs {
		if p != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT) // A hung one must be able to die.
			_ = p.cmd.Process.Signal(syscall.SIGKILL) // End of test.
			_ = p.cmd.Wait()
			c.procs[i] = nil
		}
	}
	if c.disp != nil {
		_ = c.disp.Process.Signal(syscall.SIGKILL) // End of test.
		_ = c.disp.Wait()
		c.disp = nil
	}
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
