package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// startAttempts is how often a server is started on a new random port when
// it dies before answering (another process may have taken the port).
const startAttempts = 3

// readyTimeout bounds how long a process may take to start answering.
const readyTimeout = 20 * time.Second

// simOpts are the flags of one ollamasim process.
type simOpts struct {
	models   string        // --models
	tps      float64       // --tps: tokens per second per stream; negative for no delay
	ttft     time.Duration // --ttft: delay before the first token; negative for none
	parallel int           // --parallel: generations at once
	tokens   int           // --tokens: tokens per answer without num_predict
	seed     int64         // --seed
	maxQueue int           // --max-queue; 0 keeps the simulator's default
	extra    []string      // further flags (--max-loaded-models, --load)
}

// simProc is a running simulated Ollama.
type simProc struct {
	*proc
	url  string // base URL, http://127.0.0.1:port
	addr string // 127.0.0.1:port
}

// startSim starts an ollamasim and waits until it answers.
func (l *lab) startSim(ctx context.Context, name string, o simOpts) (*simProc, error) {
	var lastErr error
	for range startAttempts {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"--listen", addr, "--models", o.models,
			"--tps", strconv.FormatFloat(o.tps, 'f', -1, 64), "--ttft", o.ttft.String(),
			"--parallel", strconv.Itoa(o.parallel), "--tokens", strconv.Itoa(o.tokens),
			"--seed", strconv.FormatInt(o.seed, 10), "--log-level", "warn", "--log-format", "json"}
		if o.maxQueue > 0 {
			args = append(args, "--max-queue", strconv.Itoa(o.maxQueue))
		}
		args = append(args, o.extra...)
		p, err := l.start(name, l.bins["ollamasim"], args...)
		if err != nil {
			return nil, err
		}
		s := &simProc{proc: p, url: "http://" + addr, addr: addr}
		lastErr = waitUntil(ctx, p, readyTimeout, name+" to answer", func() bool { return httpOK(ctx, s.url+"/api/version") })
		if lastErr == nil {
			return s, nil
		}
		p.kill()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// dispatcherProc is a running dispatcher with its embedded NATS server, and
// the driver's own NATS connection to that server.
type dispatcherProc struct {
	*proc
	url     string // HTTP base URL
	natsURL string
	nc      *nats.Conn
	q       *queue.Queue
	sec     *natsSecurity // nil: no auth, no TLS
}

// startDispatcher starts a dispatcher with an embedded NATS server on fresh
// loopback ports and a fresh store, and connects the driver to it. extra are
// more flags (e.g. --ack-wait).
func (l *lab) startDispatcher(ctx context.Context, name string, extra ...string) (*dispatcherProc, error) {
	return l.startSecureDispatcher(ctx, name, nil, extra...)
}

// startSecureDispatcher is startDispatcher with the embedded NATS server in
// operator mode on sec's auth directory and behind TLS with sec's server
// certificate, the driver connected as an admin; a nil sec is startDispatcher.
func (l *lab) startSecureDispatcher(ctx context.Context, name string, sec *natsSecurity, extra ...string) (*dispatcherProc, error) {
	var lastErr error
	for range startAttempts {
		httpAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		natsAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"--listen", httpAddr, "--nats-listen", natsAddr, "--store-dir", l.path(name + "-jetstream"), "--log-format", "json"}
		scheme := "nats://"
		if sec == nil {
			args = append(args, "--id", "bench"+strings.ReplaceAll(name, "-", ""))
		} else {
			// The requester ID is the name in the dispatcher's credentials.
			args = append(args, "--auth-dir", sec.dir.Path(), "--nats-tls-cert", sec.cert, "--nats-tls-key", sec.key)
			scheme = "tls://"
		}
		p, err := l.start(name, l.bins["dispatcher"], append(args, extra...)...)
		if err != nil {
			return nil, err
		}
		d := &dispatcherProc{proc: p, url: "http://" + httpAddr, natsURL: scheme + natsAddr, sec: sec}
		lastErr = waitUntil(ctx, p, readyTimeout, name+" to answer", func() bool { return httpOK(ctx, d.url+"/") })
		if lastErr == nil {
			lastErr = d.connect(ctx)
		}
		if lastErr == nil {
			l.onStop(d.nc.Close)
			return d, nil
		}
		p.kill()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// connect opens the driver's NATS connection and binds the queue.
func (d *dispatcherProc) connect(ctx context.Context) error {
	opts := []nats.Option{nats.Name("ollamamax-bench"), nats.MaxReconnects(-1)}
	if d.sec != nil {
		more, err := d.sec.options(benchAdmin, auth.Admin)
		if err != nil {
			return err
		}
		opts = append(opts, more...)
	}
	nc, err := nats.Connect(d.natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", d.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	q, err := queue.Open(ctx, js)
	if err != nil {
		nc.Close()
		return err
	}
	d.nc, d.q = nc, q
	return nil
}

// node returns worker id's record from the node bucket, or nil if it has none.
func (d *dispatcherProc) node(ctx context.Context, id string) (*fleet.Node, error) {
	e, err := d.q.Nodes().Get(ctx, fleet.Key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", id, err)
	}
	var n fleet.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", id, err)
	}
	return &n, nil
}

// queued returns how many jobs the job stream holds (queued or running).
func (d *dispatcherProc) queued(ctx context.Context) (uint64, error) {
	s, err := d.q.JetStream().Stream(ctx, job.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", job.Stream, err)
	}
	return s.CachedInfo().State.Msgs, nil
}

// startWorker starts worker id in front of sim and waits until its node
// record says it is ready to pull. extra are more flags (e.g. --ack-wait).
func (l *lab) startWorker(ctx context.Context, d *dispatcherProc, id string, sim *simProc, slots int, extra ...string) (*proc, error) {
	var lastErr error
	for range startAttempts {
		args := []string{"--nats-url", d.natsURL, "--ollama", sim.url, "--slots", strconv.Itoa(slots), "--id", id, "--log-format", "json"}
		if l.hasFlag("worker", "listen") {
			// The worker's own HTTP server (metrics, health) on a free port, as
			// in production; its default port would collide between workers.
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			args = append(args, "--listen", addr)
		}
		p, err := l.start(id, l.bins["worker"], append(args, extra...)...)
		if err != nil {
			return nil, err
		}
		var readErr error
		lastErr = waitUntil(ctx, p, readyTimeout, "worker "+id+" in the node bucket", func() bool {
			n, err := d.node(ctx, id)
			if err != nil {
				readErr = err
				return false
			}
			return n != nil && n.State == fleet.StateReady && len(n.Models) > 0
		})
		if lastErr == nil {
			return p, nil
		}
		if readErr != nil {
			lastErr = fmt.Errorf("%w (last error reading the node bucket: %v)", lastErr, readErr)
		}
		died := p.exited() // Died early (a taken port?): worth another try.
		p.kill()
		if ctx.Err() != nil || !died {
			break
		}
	}
	return nil, lastErr
}

// onStop registers f to run when the lab stops its processes, before they
// are stopped.
func (l *lab) onStop(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, f)
}

// nginxServer is one listening server block of the nginx configuration:
// a proxy in front of upstreams with one balancing method.
type nginxServer struct {
	Name      string   // also the upstream's name
	Balance   string   // "" for round-robin, or a directive such as "least_conn"
	Upstreams []string // host:port of each simulated Ollama
	Addr      string   // filled by startNginx: 127.0.0.1:port
	AccessLog string   // filled by startNginx: one line per request, "$upstream_addr $status"
}

// nginxProc is a running nginx.
type nginxProc struct {
	*proc
	servers []*nginxServer
}

// nginxConf is the generated configuration: one process in the foreground
// (no master, so one SIGKILL ends it), every path in the lab directory,
// loopback listeners only, and the usual settings for proxying a streamed
// API: HTTP/1.1 with keep-alive to the upstreams, no buffering either way.
// Everything else is nginx's default, including proxy_next_upstream (which
// does not retry a POST) and max_fails=1 fail_timeout=10s.
var nginxConf = template.Must(template.New("nginx.conf").Parse(`daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/client_body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;
  log_format upstream '$upstream_addr $status';
{{range .Servers}}
  upstream {{.Name}} {
    {{if .Balance}}{{.Balance}};{{end}}
    {{range .Upstreams}}server {{.}};
    {{end}}keepalive 256;
  }
  server {
    listen {{.Addr}};
    access_log {{.AccessLog}} upstream;
    location / {
      proxy_pass http://{{.Name}};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
{{end}}
}
`))

// startNginx writes a configuration for servers into a fresh directory,
// starts nginx in the foreground and waits until every server proxies
// leastConn starts nginx least_conn over sims, the baseline a scenario
// compares with, and returns its URL; "" when nginx is not available,
// which it notes in s.
func (l *lab) leastConn(ctx context.Context, s *section, name string, sims []*simProc) (string, error) {
	if l.nginx == "" {
		s.notef("nginx was not available (not installed, or `-nginx off`): the nginx baseline was skipped (`apt-get install nginx-light`).")
		return "", nil
	}
	addrs := make([]string, len(sims))
	for i, sim := range sims {
		addrs[i] = sim.addr
	}
	lc := &nginxServer{Name: "least_conn", Balance: "least_conn", Upstreams: addrs}
	if _, err := l.startNginx(ctx, name+"-nginx", lc); err != nil {
		return "", err
	}
	return "http://" + lc.Addr, nil
}

// /api/version.
func (l *lab) startNginx(ctx context.Context, name string, servers ...*nginxServer) (*nginxProc, error) {
	if l.nginx == "" {
		return nil, errors.New("nginx is not installed")
	}
	var lastErr error
	for range startAttempts {
		dir := l.path(name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		for _, s := range servers {
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			s.Addr, s.AccessLog = addr, filepath.Join(dir, s.Name+".access.log")
		}
		var b strings.Builder
		if err := nginxConf.Execute(&b, struct {
			Dir     string
			Servers []*nginxServer
		}{dir, servers}); err != nil {
			return nil, fmt.Errorf("nginx config: %w", err)
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", conf, err)
		}
		p, err := l.start(name, l.nginx, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		if err != nil {
			return nil, err
		}
		lastErr = waitUntil(ctx, p, readyTimeout, name+" to proxy", func() bool {
			for _, s := range servers {
				if !httpOK(ctx, "http://"+s.Addr+"/api/version") {
					return false
				}
			}
			return true
		})
		if lastErr == nil {
			return &nginxProc{proc: p, servers: servers}, nil
		}
		if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
			lastErr = fmt.Errorf("%w\nnginx error.log:\n%s", lastErr, b)
		}
		p.kill()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// upstreamCounts counts the requests the server's access log attributes to
// each upstream address, from the first line after skip lines.
func upstreamCounts(s *nginxServer, skip int) (map[string]int, int, error) {
	b, err := os.ReadFile(s.AccessLog)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		lines = nil
	}
	counts := map[string]int{}
	for i, line := range lines {
		if i < skip {
			continue
		}
		// "$upstream_addr $status"; a retried request lists "a, b".
		f := strings.Fields(strings.ReplaceAll(line, ",", ""))
		if len(f) >= 2 {
			counts[f[len(f)-2]]++
		}
	}
	return counts, len(lines), nil
}
