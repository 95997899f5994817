package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// logLines is a process's JSON log, safe to read while it writes.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the log records with the message msg.
func (l *logLines) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// waitRecords polls until the log has n records with the message msg and
// returns the last, failing the test after 30s or if the process exits.
func (l *logLines) waitRecords(t *testing.T, msg string, n int, exited <-chan error) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if rs := l.records(msg); len(rs) >= n {
			return rs[len(rs)-1]
		}
		select {
		case err := <-exited:
			t.Fatalf("dispatcher exited while waiting for %q: %v\n%s", msg, err, l.buf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d× %q logged within 30s", n, msg)
		}
		time.Sleep(20 * time.Millisecond) // Polling, with the deadline above.
	}
}

// TestReloadUnderLoad runs the dispatcher binary over HTTPS with a
// --config file and a worker beside a simulated Ollama, keeps answers
// streaming through it, and reloads: with SIGHUP, a new body limit and a
// certificate from other files (and a restart-only setting, logged as
// such), then a bad value, refused with the limit and certificate kept;
// with the shared settings entry, a new queue wait, then a setting the
// entry may not hold, refused. Every answer streamed across the reloads
// arrives whole: no stream is dropped.
func TestReloadUnderLoad(t *testing.T) {
	bin := build(t)
	ca := testcert.NewCA(t, "api")
	firstDir, secondDir := t.TempDir(), t.TempDir()
	first := ca.Server(firstDir)
	httpAddr, natsAddr := natstest.FreeAddr(t), natstest.FreeAddr(t)
	conf := filepath.Join(t.TempDir(), "dispatcher.conf")
	writeConf := func(lines ...string) {
		t.Helper()
		tmp := conf + ".new" // Renamed over the old, as an operator should.
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, conf); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("# the API's limits and certificate", "max-body = 1048576", "tls-cert="+first.Cert, "OLLAMAMAX_TLS_KEY="+first.Key)
	cmd := exec.Command(bin, "--config", conf, "--listen", httpAddr, "--nats-listen", natsAddr, "--store-dir", filepath.Join(t.TempDir(), "js"))
	cmd.Env = environ()
	logs := &logLines{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	logs.waitRecords(t, "dispatcher listening", 1, exited)

	// A worker with eight slots beside a simulated Ollama that streams 20
	// tokens a second, 24 to an answer.
	simCfg := ollamasim.DefaultConfig()
	simCfg.TokensPerSecond, simCfg.TimeToFirstToken, simCfg.Parallel = 20, time.Millisecond, 8
	sim := httptest.NewServer(ollamasim.New(simCfg))
	t.Cleanup(sim.Close)
	simURL, _ := url.Parse(sim.URL) // httptest URLs always parse.
	wcfg := worker.DefaultConfig("w0", simURL)
	wcfg.NATSURL, wcfg.Listen, wcfg.Slots, wcfg.Heartbeat, wcfg.Logger = "nats://"+natsAddr, "", 8, 500*time.Millisecond, fleettest.Logger()
	wctx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(wctx, wcfg) }()
	t.Cleanup(func() {
		stopWorker()
		if err := <-workerDone; err != nil {
			t.Errorf("worker: %v", err)
		}
	})

	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	trusted := &tls.Config{RootCAs: roots}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: trusted}}
	base := "https://" + httpAddr
	fleettest.WaitFor(t, 30*time.Second, "the model listed through the dispatcher", func() bool {
		resp, err := client.Get(base + "/api/tags")
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		var tags api.ListResponse
		return json.NewDecoder(resp.Body).Decode(&tags) == nil && len(tags.Models) > 0
	})
	serial := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", httpAddr, trusted)
		if err != nil {
			t.Fatalf("TLS dial of the API: %v", err)
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	post := func(n int) int {
		t.Helper()
		body := `{"model":"llama3.2","prompt":"` + strings.Repeat("x", n-60) + `","stream":false,"options":{"num_predict":1}}`
		resp, err := client.Post(base+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // Only the status matters.
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if got, want := serial(), first.Serial.String(); got != want {
		t.Fatalf("serial %s at start, want %s", got, want)
	}
	if got := post(4096); got != http.StatusOK {
		t.Fatalf("a 4 KiB body at start: %d, want 200", got)
	}

	// The load: six clients streaming answers one after another, each on
	// its own keep-alive connection, until told to stop.
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	var mu sync.Mutex
	var whole int
	var broken []string
	var streaming atomic.Int64 // answers begun and not ended (or, briefly, failed before their first byte)
	for i := range 6 {
		load.Go(func() {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: trusted}}
			for n := 0; ; n++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				last, err := streamOne(c, base, fmt.Sprintf("client %d, question %d", i, n), func() { streaming.Add(1) })
				streaming.Add(-1)
				mu.Lock()
				if err != nil || !last.Done || last.EvalCount != 24 {
					broken = append(broken, fmt.Sprintf("client %d answer %d: done %v, %d tokens, %v", i, n, last.Done, last.EvalCount, err))
				} else {
					whole++
				}
				mu.Unlock()
			}
		})
	}
	answered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return whole
	}
	// streamsFinishing waits until the load has answered n more in full.
	streamsFinishing := func(n int) {
		t.Helper()
		from := answered()
		fleettest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d more whole answers", n), func() bool { return answered() >= from+n })
	}
	streamsFinishing(6)
	// sighup sends SIGHUP while answers are streaming.
	sighup := func() {
		t.Helper()
		fleettest.WaitFor(t, 30*time.Second, "answers streaming", func() bool { return streaming.Load() >= 3 })
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// 1: a smaller body limit and a certificate from other files; a
	// restart-only setting is logged as such.
	second := ca.Server(secondDir)
	writeConf("max-body=2000", "tls-cert="+second.Cert, "tls-key="+second.Key, "max-conns=100")
	sighup()
	r := logs.waitRecords(t, "reloaded", 1, exited)
	if r["max_body"] != 2000.0 || r["https_certificate"] != second.Cert || r["cause"] != "signal" {
		t.Errorf("reload logged %v, want max_body 2000, the new certificate, cause signal", r)
	}
	if r := logs.waitRecords(t, "these settings changed but take effect only after a restart", 1, exited); r["settings"] != "max-conns" {
		t.Errorf("restart-only settings logged as %v, want max-conns", r["settings"])
	}
	if got, want := serial(), second.Serial.String(); got != want {
		t.Errorf("a new connection after the reload sees serial %s, want the new certificate's %s", got, want)
	}
	if got := post(4096); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 KiB body after max-body=2000: %d, want 413", got)
	}
	streamsFinishing(6)

	// 2: a bad value: refused, the limit and the certificate kept.
	writeConf("max-body=lots", "tls-cert="+first.Cert, "tls-key="+first.Key)
	sighup()
	r = logs.waitRecords(t, "reload refused: keeping the settings in use", 1, exited)
	if msg, _ := r["err"].(string); !strings.Contains(msg, `line 1: max-body="lots"`) || !strings.Contains(msg, conf) {
		t.Errorf("refusal logged err %q, want the file, line and value", msg)
	}
	if got := post(4096); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 KiB body after a refused reload: %d, want 413 still", got)
	}
	if got := post(1000); got != http.StatusOK {
		t.Errorf("a 1000-byte body after a refused reload: %d, want 200", got)
	}
	if got, want := serial(), second.Serial.String(); got != want {
		t.Errorf("after a refused reload: serial %s, want the certificate in use, %s", got, want)
	}
	streamsFinishing(6)

	// 3: the shared settings: a new queue wait, then a setting they may
	// not hold. The file is good again: every reload reads it.
	writeConf("max-body=2000", "tls-cert="+second.Cert, "tls-key="+second.Key)
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := js.KeyValue(t.Context(), job.ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, 30*time.Second, "answers streaming", func() bool { return streaming.Load() >= 3 })
	if _, err := shared.PutString(t.Context(), job.ConfigDispatcher, "queue-wait=45s\n"); err != nil {
		t.Fatal(err)
	}
	r = logs.waitRecords(t, "reloaded", 2, exited)
	if r["queue_wait"] != "45s" || r["cause"] != "shared settings" {
		t.Errorf("reload logged %v, want queue_wait 45s, cause shared settings", r)
	}
	if _, err := shared.PutString(t.Context(), job.ConfigDispatcher, "queue-wait=45s\nmax-conns=5\n"); err != nil {
		t.Fatal(err)
	}
	r = logs.waitRecords(t, "reload refused: keeping the settings in use", 2, exited)
	if msg, _ := r["err"].(string); !strings.Contains(msg, "entry dispatcher) line 2: max-conns cannot be set here") {
		t.Errorf("refusal logged err %q, want the entry, line and setting", msg)
	}
	if got := post(4096); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 KiB body after the shared settings changed: %d, want 413 still", got)
	}
	streamsFinishing(6)

	close(stopLoad)
	load.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, b := range broken {
		t.Error(b)
	}
	t.Logf("%d answers streamed whole across four reloads, two of them refused", whole)
	if n := len(logs.records("reloaded")); n != 2 {
		t.Errorf("%d reloads applied, want 2", n)
	}
}

// streamOne streams one generation through c and returns its last chunk;
// it calls begun once the answer's status is 200 (and always, before it
// returns, so that a caller can count answers in flight).
func streamOne(c *http.Client, base, prompt string, begun func()) (api.GenerateResponse, error) {
	once := sync.OnceFunc(begun)
	defer once()
	b, _ := json.Marshal(map[string]string{"model": "llama3.2", "prompt": prompt}) // Strings always encode.
	resp, err := c.Post(base+"/api/generate", "application/json", bytes.NewReader(b))
	if err != nil {
		return api.GenerateResponse{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body) // For the message only.
		return api.GenerateResponse{}, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	once()
	var last api.GenerateResponse
	dec := json.NewDecoder(resp.Body)
	for dec.More() {
		last = api.GenerateResponse{}
		if err := dec.Decode(&last); err != nil {
			return last, err
		}
	}
	return last, nil
}
