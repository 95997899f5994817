package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
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

// last returns the last record with the message msg and how many there are.
func (l *logLines) last(msg string) (map[string]any, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last map[string]any
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil && r["msg"] == msg {
			last, n = r, n+1
		}
	}
	return last, n
}

// TestSIGHUPReloads runs the worker binary with a --config file, changes
// the file and sends SIGHUP: the node record gets the new slots and
// labels, a restart-only setting is logged as such, and a bad value is
// refused with the file, line and value, the slots kept; the workers'
// shared settings apply beneath the file.
func TestSIGHUPReloads(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Setup(t.Context(), js, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sim := httptest.NewServer(ollamasim.New(ollamasim.DefaultConfig()))
	t.Cleanup(sim.Close)
	conf := filepath.Join(t.TempDir(), "worker.conf")
	writeConf := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf+".new", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(conf+".new", conf); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("slots=1\nOLLAMAMAX_WORKER_LABELS=gpu=a100,zone=eu\n")
	cmd := exec.Command(bin, "--config", conf, "--nats-url", b.ClientURL(), "--ollama", sim.URL, "--id", "w7", "--listen", "", "--heartbeat", "500ms")
	cmd.Env = append(os.Environ(), "OLLAMAMAX_LOG_LEVEL=info", "OLLAMAMAX_LOG_FORMAT=json", "OLLAMA_NUM_PARALLEL=", "OLLAMAMAX_WORKER_LABELS=", "OLLAMAMAX_CONFIG=")
	logs := &logLines{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})

	ctx, cancel := context.WithCancel(context.Background())
	view, err := fleet.Watch(ctx, q.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-viewDone })
	record := func(what string, ok func(n *fleet.Node) bool) {
		t.Helper()
		fleettest.WaitFor(t, 15*time.Second, what, func() bool {
			for _, n := range view.Nodes() {
				if n.ID == "w7" && ok(n) {
					return true
				}
			}
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("worker exited: %v\n%s", err, logs.buf.String())
			default:
			}
			return false
		})
	}
	waitLog := func(msg string, n int) map[string]any {
		t.Helper()
		var r map[string]any
		fleettest.WaitFor(t, 15*time.Second, "log "+msg, func() bool {
			var got int
			r, got = logs.last(msg)
			return got >= n
		})
		return r
	}
	record("one slot and the file's labels", func(n *fleet.Node) bool {
		return n.SlotsTotal == 1 && maps.Equal(n.Labels, map[string]string{"gpu": "a100", "zone": "eu"})
	})

	writeConf("slots=3\nlabel=gpu=h100\nfetch-bytes=33554432\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := waitLog("reloaded", 1)
	if r["slots"] != 3.0 || r["labels"] != "gpu=h100" {
		t.Errorf("reload logged %v, want slots 3, labels gpu=h100", r)
	}
	if r := waitLog("these settings changed but take effect only after a restart", 1); r["settings"] != "fetch-bytes" {
		t.Errorf("restart-only settings logged as %v, want fetch-bytes", r["settings"])
	}
	record("three slots and the new label", func(n *fleet.Node) bool {
		return n.SlotsTotal == 3 && maps.Equal(n.Labels, map[string]string{"gpu": "h100"})
	})

	writeConf("slots=0\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r = waitLog("reload refused: keeping the settings in use", 1)
	if msg, _ := r["err"].(string); !strings.Contains(msg, "--slots 0: want at least 1") {
		t.Errorf("refusal logged err %q, want the slots named", msg)
	}
	writeConf("slots=three\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r = waitLog("reload refused: keeping the settings in use", 2)
	if msg, _ := r["err"].(string); !strings.Contains(msg, conf+` line 1: slots="three"`) {
		t.Errorf("refusal logged err %q, want the file, line and value", msg)
	}
	record("three slots still", func(n *fleet.Node) bool { return n.SlotsTotal == 3 })

	// The shared settings: beneath the file, which no longer sets slots.
	writeConf("label=gpu=h100\n")
	kv, err := q.Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(t.Context(), job.ConfigWorker, "slots=2\nlabel=gpu=never\n"); err != nil {
		t.Fatal(err)
	}
	record("two slots from the shared settings, the file's label", func(n *fleet.Node) bool {
		return n.SlotsTotal == 2 && maps.Equal(n.Labels, map[string]string{"gpu": "h100"})
	})
	if r, _ := logs.last("reloaded"); r["cause"] != "shared settings" {
		t.Errorf("last reload logged cause %v, want shared settings", r["cause"])
	}
}
