// Package realollama starts real Ollama servers inside tests, each with its
// own models directory holding tiny random models (internal/tinymodel), so
// that tests can use the real thing as an oracle where the simulator
// (internal/ollamasim) only stands in for it.
//
// The binary is EnvBinary's, or Ollama's CPU build from the shared
// directory's tarball (Tarball), unpacked once per machine into the user's
// cache. Where neither is there, or the CPU cannot run the build, Start
// skips the test and says why, so suites that use it pass on any machine.
//
// Production code must not import this package.
package realollama

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/tinymodel"
)

// Model is a model to register on a server.
type Model struct {
	// Name is the model's name, as in /api/create.
	Name string
	// Config is the GGUF the model is made of.
	Config tinymodel.Config
	// Template is its template; the default is tinymodel.Template.
	Template string
	// Parameters are its parameters. num_thread is always 1 and num_ctx
	// defaults to 512: one core per server, and little memory.
	Parameters map[string]any
}

// ToolsTemplate is tinymodel.Template with the tools listed first, so that
// Ollama lets a model with it take tools.
const ToolsTemplate = "{{- if .Tools }}tools: {{ range .Tools }}{{ .Function.Name }} {{ end }}\n{{ end }}" + tinymodel.Template

// DefaultModels are the models Start registers unless Options.Models says
// otherwise:
//   - tiny: a chat model that stops after a few hundred tokens on average;
//   - tiny-long: one that never stops before num_predict;
//   - tiny-tools: a chat model with a template that takes tools;
//   - tiny-embed: an embedding model (mean pooling, 64 dimensions).
var DefaultModels = []Model{
	{Name: "tiny", Config: tinymodel.Config{Name: "tiny", Seed: 42}},
	{Name: "tiny-long", Config: tinymodel.Config{Name: "tiny-long", Seed: 42, NeverStop: true}},
	// Its own weights: two models of one file share one runner in Ollama.
	{Name: "tiny-tools", Config: tinymodel.Config{Name: "tiny-tools", Seed: 44}, Template: ToolsTemplate},
	{Name: "tiny-embed", Config: tinymodel.Config{Name: "tiny-embed", Seed: 43, Embedding: true}},
}

// Options shape a server.
type Options struct {
	// CPU picks the core the server (and its runners) is pinned to: the
	// CPU-th of the cores the test may run on, modulo their number. Two
	// servers on two cores collapse to a tenth of one's speed unless each
	// has its own: give each server another CPU.
	CPU int
	// Models are registered before Start returns; nil means DefaultModels,
	// an empty non-nil slice none.
	Models []Model
	// Env is added to the server's environment, e.g. "OLLAMA_NUM_PARALLEL=2".
	// The test's own OLLAMA_* variables are not passed on.
	Env []string
}

// Server is a running Ollama. It stops when the test ends.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL string
	// Models is the models directory (OLLAMA_MODELS).
	Models string
	// Log is the file the server's output goes to.
	Log string
	// CPU is the core it is pinned to, or -1.
	CPU int

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's, once exited is closed
	stop   sync.Once
}

// startTimeout bounds a server's start, from exec to answering /api/version.
const startTimeout = 30 * time.Second

// client bounds every request the package makes: a server that accepts a
// connection and never answers fails the test instead of hanging it.
var client = &http.Client{Timeout: time.Minute}

// probe is for the readiness polls.
var probe = &http.Client{Timeout: 2 * time.Second}

// Start starts `ollama serve` on a free loopback port with its own models
// directory and home in t.TempDir(), pinned to one core, registers the
// models through the HTTP API (/api/blobs and /api/create), and stops it
// when the test ends. It skips the test when there is no binary (see
// ErrNoOllama) and fails it when the server does not come up.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := Binary()
	if errors.Is(err, ErrNoOllama) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	models := o.Models
	if models == nil {
		models = DefaultModels
	}
	dir := t.TempDir()
	var s *Server
	for attempt := 0; ; attempt++ {
		s, err = start(t, bin, dir, attempt, o)
		// Another process may take the free port between its check and the
		// server's bind: try another.
		if err == nil || attempt == 2 || !strings.Contains(tail(s.Log, 4096), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("start ollama: %v\n%s", err, tail(s.Log, 4096))
	}
	for _, m := range models {
		if err := s.Create(m); err != nil {
			t.Fatalf("create model %s: %v\n%s", m.Name, err, tail(s.Log, 4096))
		}
	}
	return s
}

// start starts one server and waits until it answers, registering its
// stop on t.Cleanup; on error the returned Server still names its log.
func start(t testing.TB, bin, dir string, attempt int, o Options) (*Server, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return &Server{}, err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return &Server{}, err
	}
	run := filepath.Join(dir, fmt.Sprintf("run%d", attempt))
	s := &Server{URL: "http://" + addr, Models: filepath.Join(run, "models"), Log: filepath.Join(run, "ollama.log"), exited: make(chan struct{})}
	home := filepath.Join(run, "home")
	for _, d := range []string{s.Models, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return s, err
		}
	}
	logf, err := os.Create(s.Log)
	if err != nil {
		return s, err
	}
	defer logf.Close() // The child has its own descriptor.
	env := []string{"OLLAMA_HOST=" + addr, "OLLAMA_MODELS=" + s.Models, "HOME=" + home,
		// No cloud: nothing tries to reach ollama.com (there is no network).
		"OLLAMA_NO_CLOUD=1"}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OLLAMA_") && !strings.HasPrefix(e, "HOME=") {
			env = append(env, e)
		}
	}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = append(env, o.Env...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = procAttr()
	cpu, why, err := startPinned(s.cmd, o.CPU)
	if err != nil {
		return s, err
	}
	s.CPU = cpu
	if cpu < 0 {
		t.Logf("realollama: the server runs on any core: %s", why)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("realollama: the end of %s:\n%s", s.Log, tail(s.Log, 8192))
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			return s, fmt.Errorf("ollama serve exited before it answered: %v", s.err)
		default:
		}
		if resp, err := probe.Get(s.URL + "/api/version"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // Only the status matters.
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("ollama serve did not answer /api/version within %s", startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the server's process ID (0 before it started).
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// stopTimeout bounds a graceful stop before the server is killed.
const stopTimeout = 10 * time.Second

// Stop stops the server and its runners: SIGTERM, then SIGKILL after
// stopTimeout. It waits for the server to exit and is idempotent; Start
// calls it when the test ends.
func (s *Server) Stop() {
	s.stop.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		pid := s.cmd.Process.Pid
		select {
		case <-s.exited:
		default:
			_ = signalGroup(pid, syscall.SIGTERM) // It may be exiting already.
			select {
			case <-s.exited:
			case <-time.After(stopTimeout):
				_ = signalGroup(pid, syscall.SIGKILL)
				<-s.exited
			}
		}
		// Runners that outlived their server (it exited on its own) go too.
		_ = signalGroup(pid, syscall.SIGKILL) // ESRCH when none is left.
	})
}

var blobs struct {
	sync.Mutex
	files map[tinymodel.Config][]byte
}

// File returns the GGUF file of c, generated once per process.
func File(c tinymodel.Config) ([]byte, error) {
	blobs.Lock()
	defer blobs.Unlock()
	if b, ok := blobs.files[c]; ok {
		return b, nil
	}
	b, err := tinymodel.Bytes("", c)
	if err != nil {
		return nil, err
	}
	if blobs.files == nil {
		blobs.files = make(map[tinymodel.Config][]byte)
	}
	blobs.files[c] = b
	return b, nil
}

// Create registers m on the server: its GGUF as a blob, then the model
// with its template and parameters, as `ollama create` does.
func (s *Server) Create(m Model) error {
	b, err := File(m.Config)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := client.Post(s.URL+"/api/blobs/"+digest, "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("upload blob: %w", err)
	}
	if err := drain(resp, http.StatusCreated, http.StatusOK); err != nil {
		return fmt.Errorf("upload blob: %w", err)
	}
	params := map[string]any{"num_ctx": 512}
	for k, v := range m.Parameters {
		params[k] = v
	}
	params["num_thread"] = 1
	template := m.Template
	if template == "" {
		template = tinymodel.Template
	}
	body, err := json.Marshal(map[string]any{
		"model": m.Name, "files": map[string]string{m.Name + ".gguf": digest},
		"template": template, "parameters": params, "stream": false,
	})
	if err != nil {
		return err
	}
	resp, err = client.Post(s.URL+"/api/create", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	return drain(resp, http.StatusOK)
}

// drain reads and closes resp, and returns an error with its body unless
// its status is one of ok.
func drain(resp *http.Response, ok ...int) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	for _, code := range ok {
		if resp.StatusCode == code {
			return nil
		}
	}
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
}

// tail returns the last n bytes of the file at path ("" when unreadable).
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(f) // What could be read is what is shown.
	return string(b)
}
