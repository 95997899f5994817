// Command dispatcher serves the Ollama HTTP API in front of the OllamaMax
// queue. Without --nats-url it runs an embedded NATS server with JetStream that
// workers connect to.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/broker"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/ollamamax/ollamamax/pkg/tracing"
)

const synopsis = `Usage: dispatcher [flags]

Serves the Ollama API (and, later, OpenAI's) on --listen and turns each
inference request into a job on the OllamaMax queue. Workers beside each Ollama
take the jobs and stream the answers back.

With no --nats-url, it starts an embedded NATS server with JetStream on
--nats-listen (loopback by default) for workers to connect to. To let
workers on other machines in, give it an auth directory (ollamaq auth init):
the server then runs in operator mode and lets in only credentials issued
from it, each with its role's permissions (docs/security.md). Without one it
refuses a non-loopback --nats-listen unless --insecure. With --nats-tls-cert
and --nats-tls-key its listener requires TLS.

The API listens on loopback by default; a non-loopback --listen needs --keys
(every API route then requires a key from 'ollamaq keys create') or
--insecure. With --tls-cert and --tls-key it serves HTTPS.

Settings come from the command line, then a --config file of name=value
lines (flag names or their variables), then the environment, then the
fleet's shared settings: the entry "dispatcher" of the ollamaq_config bucket,
which every dispatcher watches. SIGHUP reads the file and every certificate
again and applies, without dropping a stream, what changed of --log-level,
--origins, --max-body, --body-budget, --queue-wait, --max-queued,
--queue-full-wait, --tenant-window, --tenant-held, --stall, --max-silence
and --tls-cert/--tls-key; a change of the shared entry does the same. A
reload with a bad value changes nothing and logs why; other settings are
logged as needing a restart.

'dispatcher healthcheck' exits 0 when the dispatcher's /readyz answers 200,
for a container's health check (see dispatcher healthcheck --help).

Examples:
  dispatcher                                   # embedded NATS on 127.0.0.1:4222, API on 127.0.0.1:11435
  ollamaq auth init && dispatcher --auth-dir ~/.config/ollamamax/auth --nats-listen 0.0.0.0:4222
  dispatcher --auth-dir DIR --nats-listen 0.0.0.0:4222 --nats-tls-cert server.pem --nats-tls-key server-key.pem   # TLS; kill -HUP reloads them
  dispatcher --nats-url nats://nats.internal:4222 --nats-creds dispatcher.creds --listen 0.0.0.0:11435 --keys --tls-cert api.pem --tls-key api-key.pem
  dispatcher --config /etc/ollamamax/dispatcher.conf   # then: kill -HUP PID after editing it
  OLLAMA_HOST=127.0.0.1:11435 ollama run llama3.2   # any Ollama client works
  OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 dispatcher   # traces to a collector

` + tracing.Help + `
Flags (each also read from the environment variable in brackets):
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		cli.Exit("dispatcher healthcheck", healthcheck(context.Background(), os.Args[2:]))
		return
	}
	cli.Exit("dispatcher", run())
}

// reloadable says whether a reload applies flag name (dispatcher.Settings);
// the rest take a restart.
func reloadable(name string) bool { return cli.Find(cli.DispatcherReloadable, name) != nil }

// sharable says whether the shared settings may set flag name.
func sharable(name string) bool {
	r := cli.Find(cli.DispatcherReloadable, name)
	return r != nil && r.Shared
}

// sharedFrom names the shared settings in errors.
const sharedFrom = "the shared settings (bucket " + job.ConfigBucket + ", entry " + job.ConfigDispatcher + ")"

// flags is one parse of the command line, the configuration file, the
// environment and the shared settings.
type flags struct {
	fs        *flag.FlagSet
	cfg       dispatcher.Config
	creds     string
	clientTLS *cli.ClientTLS
	log       *cli.LogOptions
}

// parse parses the flags from l. id is the default requester ID, made
// once, so that every parse has the same.
func parse(l cli.Layers, id string) (*flags, bool, error) {
	f := &flags{cfg: dispatcher.DefaultConfig(defaultStoreDir())}
	cfg := &f.cfg
	cfg.ID = id
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	f.fs = fs
	fs.Usage = func() { cli.Usage(fs.Output(), synopsis, fs.PrintDefaults)() } // To the output at the time: Layers.Output.
	cli.AddConfigFlag(fs)
	fs.StringVar(&cfg.HTTPAddr, "listen", cfg.HTTPAddr, "HTTP address of the Ollama-compatible API [OLLAMAMAX_LISTEN]")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "NATS server or cluster to use; empty starts an embedded server [NATS_URL]")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file, for --nats-url or the embedded server with --auth-dir (default there: DIR/creds/dispatcher.creds); its name is the requester ID [NATS_CREDS]")
	fs.StringVar(&cfg.Embedded.Listen, "nats-listen", cfg.Embedded.Listen, "client address of the embedded NATS server; a non-loopback address, for workers on other machines, needs --auth-dir (or --insecure) [OLLAMAMAX_NATS_LISTEN]")
	fs.StringVar(&cfg.Embedded.AuthDir, "auth-dir", "", "auth directory (ollamaq auth init): the embedded NATS server runs in operator mode and lets in only its credentials [OLLAMAMAX_AUTH_DIR]")
	fs.BoolVar(&cfg.RequireKeys, "keys", false, "require an HTTP API key (ollamaq keys create) on every API route [OLLAMAMAX_KEYS]")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "let the embedded NATS server listen beyond loopback without --auth-dir, and the HTTP API without --keys: anyone who reaches them can read every prompt, use every model and delete the queue [OLLAMAMAX_INSECURE]")
	fs.StringVar(&cfg.Embedded.TLS.Cert, "nats-tls-cert", "", "PEM certificate of the embedded NATS server: its listener then requires TLS; reloaded on SIGHUP [OLLAMAMAX_NATS_TLS_CERT]")
	fs.StringVar(&cfg.Embedded.TLS.Key, "nats-tls-key", "", "PEM private key of --nats-tls-cert; reloaded on SIGHUP [OLLAMAMAX_NATS_TLS_KEY]")
	fs.StringVar(&cfg.Embedded.TLS.CA, "nats-tls-ca", "", "PEM file of the CA whose client certificates the embedded NATS server requires; reloaded on SIGHUP [OLLAMAMAX_NATS_TLS_CA]")
	fs.StringVar(&cfg.MetricsAddr, "metrics-listen", "", "serve /metrics on this address only, not on --listen (plain HTTP, no API key) [OLLAMAMAX_METRICS_LISTEN]")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate of the API: with --tls-key it serves HTTPS; reloaded on SIGHUP, also from another file [OLLAMAMAX_TLS_CERT]")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert; reloaded on SIGHUP [OLLAMAMAX_TLS_KEY]")
	f.clientTLS = cli.ClientTLSFlags(fs)
	fs.StringVar(&cfg.Embedded.StoreDir, "store-dir", cfg.Embedded.StoreDir, "JetStream storage directory of the embedded server [OLLAMAMAX_STORE_DIR]")
	fs.BoolVar(&cfg.Embedded.SyncAlways, "sync-always", false, "fsync every JetStream write of the embedded server: slower, survives OS crashes")
	fs.Int64Var(&cfg.MaxBody, "max-body", cfg.MaxBody, "largest request body in bytes; larger ones get 413; reloadable [OLLAMAMAX_MAX_BODY]")
	fs.Int64Var(&cfg.BodyBudget, "body-budget", dispatcher.DefaultBodyBudget, "bytes of large request bodies (over 64 KiB) held at once, read or queued and not yet started by a worker; beyond it requests wait unread, up to --queue-wait, then get 503; -1 for no bound; reloadable [OLLAMAMAX_BODY_BUDGET]")
	fs.DurationVar(&cfg.QueueWait, "queue-wait", cfg.QueueWait, "how long a request waits for a worker before it fails with 503; reloadable [OLLAMAMAX_QUEUE_WAIT]")
	fs.IntVar(&cfg.MaxQueued, "max-queued", cfg.MaxQueued, "interactive jobs that may wait per model before requests get 503 (like OLLAMA_MAX_QUEUE); async requests are refused at 3/4 of it, batch at 1/2 (docs/scheduling.md); 0 for no bound; reloadable [OLLAMAMAX_MAX_QUEUED]")
	fs.DurationVar(&cfg.QueueFullWait, "queue-full-wait", 0, "how long a request waits for room in a full queue before 503; a request may ask otherwise with the Ollamaq-Queue-Full-Wait header; reloadable [OLLAMAMAX_QUEUE_FULL_WAIT]")
	fs.DurationVar(&cfg.TenantWindow, "tenant-window", cfg.TenantWindow, "with --keys, share each model's ready slots among the tenants active this long: a tenant's jobs in flight are capped so that the others keep room, the rest wait at the dispatcher; 0 turns tenant fairness off; reloadable [OLLAMAMAX_TENANT_WINDOW]")
	fs.IntVar(&cfg.TenantHeld, "tenant-held", cfg.TenantHeld, "requests per tenant and model held at the dispatcher for their tenant's turn; beyond it 429 with Retry-After (503 when the tenant is alone); reloadable [OLLAMAMAX_TENANT_HELD]")
	fs.DurationVar(&cfg.Stall, "stall", queue.DefaultStall, "ask for a started job's redelivery when its worker sends nothing, heartbeats included, this long; 0 leaves failover to --ack-wait; reloadable [OLLAMAMAX_STALL]")
	fs.DurationVar(&cfg.MaxSilence, "max-silence", cfg.MaxSilence, "end an answer a worker started with an error when it sends nothing this long; reloadable [OLLAMAMAX_MAX_SILENCE]")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", cfg.BodyTimeout, "time to receive a whole request, body included; a slower one gets 400 and its connection is closed (answers may stream for longer) [OLLAMAMAX_BODY_TIMEOUT]")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close a keep-alive HTTP connection idle this long [OLLAMAMAX_IDLE_TIMEOUT]")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "HTTP connections open at once; past it a new one gets 503 (default 4096, at most half the open-file limit) [OLLAMAMAX_MAX_CONNS]")
	fs.DurationVar(&cfg.Queue.AckWait, "ack-wait", 0, "redeliver a job whose worker is silent this long; set the same on all processes (default from streams/consumer.json: 10s) [OLLAMAMAX_ACK_WAIT]")
	fs.DurationVar(&cfg.Queue.AuditRetention, "audit-retention", 0, "how long the audit trail (OLLAMAQ_AUDIT: one record per job and management action) keeps records (default: keep the stream's, else 90 days from streams/audit.json) [OLLAMAMAX_AUDIT_RETENTION]")
	fs.IntVar(&cfg.Queue.Replicas, "replicas", 0, "JetStream replicas of the job stream: 1 single server, 3 cluster (default: keep existing, else 1) [OLLAMAMAX_REPLICAS]")
	origins := fs.String("origins", "", "extra CORS origins, comma-separated, wildcards allowed, as Ollama's OLLAMA_ORIGINS; reloadable [OLLAMA_ORIGINS]")
	fs.StringVar(&cfg.ID, "id", cfg.ID, "requester ID of this dispatcher, unique among dispatchers [OLLAMAMAX_ID]")
	f.log = cli.AddLogFlags(fs)
	if help, err := cli.ParseLayers(fs, l); help || err != nil {
		return nil, help, err
	}
	if _, err := cli.ParseLevel(f.log.Level); err != nil {
		return nil, false, err
	}
	if cfg.Stall == 0 {
		cfg.Stall = -1 // Off: the flag's 0 is the Options' negative.
	}
	if *origins != "" {
		cfg.Origins = strings.Split(*origins, ",")
	}
	return f, false, nil
}

// settings are the reloadable part of f, with the names of the other
// flags whose values differ from those of running, the parse the process
// started with.
func (f *flags) settings(running *flags) dispatcher.Settings {
	level, _ := cli.ParseLevel(f.log.Level) // parse checked it.
	c := f.cfg
	return dispatcher.Settings{LogLevel: level, Origins: c.Origins, MaxBody: c.MaxBody, BodyBudget: c.BodyBudget, QueueWait: c.QueueWait,
		MaxQueued: c.MaxQueued, QueueFullWait: c.QueueFullWait, TenantWindow: c.TenantWindow, TenantHeld: c.TenantHeld, MaxSilence: c.MaxSilence, Stall: c.Stall, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Restart: cli.Changed(running.fs, f.fs, reloadable)}
}

func run() error {
	args, id := os.Args[1:], "d"+job.NewID()[:10]
	f, help, err := parse(cli.Layers{Args: args}, id)
	if help || err != nil {
		return err
	}
	log, level, err := f.log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	cfg := f.cfg
	cfg.Logger, cfg.Level = log, level
	creds := f.creds
	if cfg.NATSURL != "" {
		cfg.Embedded.AuthDir = "" // Only the embedded server uses it.
	} else if cfg.Embedded.AuthDir != "" && creds == "" {
		creds = auth.CredsPath(cfg.Embedded.AuthDir, auth.DispatcherUser)
	}
	if creds != "" {
		if err := useCreds(&cfg, creds, flagSet(f.fs, "id")); err != nil {
			return err
		}
	}
	if cfg.NATSURL != "" {
		cfg.Embedded.TLS = broker.TLSConfig{} // Only the embedded server uses it.
		opts, err := f.clientTLS.Options()
		if err != nil {
			return err
		}
		cfg.NATSOptions = append(cfg.NATSOptions, opts...)
	}
	cfg.Reconfigure = func(shared string) (dispatcher.Settings, error) {
		next, _, err := parse(cli.Layers{Args: args, Shared: shared, SharedFrom: sharedFrom, Sharable: sharable}, id)
		if err != nil {
			return dispatcher.Settings{}, err
		}
		if cfg.NATSURL != "" {
			if err := next.clientTLS.Check(); err != nil {
				log.Warn("the NATS client certificate files do not load: the next reconnect will fail", "err", err)
			}
		}
		return next.settings(f), nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tp, flushTraces, err := tracing.ForDaemon(ctx, "ollamamax-dispatcher", cfg.ID, log)
	if err != nil {
		return err
	}
	defer flushTraces()
	cfg.Tracer = tp
	reload, stopHUP := cli.NotifyReload()
	defer stopHUP()
	cfg.Reload = reload
	return explain(dispatcher.Run(ctx, cfg), cfg)
}

// useCreds connects with the credentials file path. Credentials issued for
// the dispatcher role bind its replies to their name, which becomes the
// requester ID unless --id was given, and its inboxes to _INBOX_<name>.
func useCreds(cfg *dispatcher.Config, path string, idGiven bool) error {
	c, err := cli.ReadCreds(path, "--nats-creds, --auth-dir")
	if err != nil {
		return err
	}
	cfg.NATSOptions = append(cfg.NATSOptions, c.Options()...)
	if c.InboxPrefix() == "" {
		return nil // Not bound to a name: any --id.
	}
	switch {
	case !idGiven:
		cfg.ID = c.Name
	case cfg.ID != c.Name:
		return fmt.Errorf("--id %s differs from the name %s in the credentials %s, to which their permissions bind the replies; drop --id, or issue credentials named %s (ollamaq auth add %s --role dispatcher)",
			cfg.ID, c.Name, path, cfg.ID, cfg.ID)
	}
	return nil
}

// flagSet reports whether the command line or the environment set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// explain names the flag and variable to change when a listener or the store
// directory is taken, typically by another dispatcher already running.
func explain(err error, cfg dispatcher.Config) error {
	var inUse *broker.StoreDirInUseError
	switch {
	case errors.Is(err, dispatcher.ErrListen):
		return cli.ListenError(err, "the Ollama API", cfg.HTTPAddr, "listen", "OLLAMAMAX_LISTEN")
	case errors.Is(err, dispatcher.ErrMetricsListen):
		return cli.ListenError(err, "metrics", cfg.MetricsAddr, "metrics-listen", "OLLAMAMAX_METRICS_LISTEN")
	case errors.Is(err, broker.ErrListen):
		return cli.ListenError(err, "NATS clients", cfg.Embedded.Listen, "nats-listen", "OLLAMAMAX_NATS_LISTEN")
	case errors.Is(err, dispatcher.ErrOpenAPI):
		return cli.Explain(err, "refusing to serve the API on %s without API keys: anyone who reaches it could use every model and delete models from every worker; create keys with 'ollamaq keys create' and pass --keys (OLLAMAMAX_KEYS), or pass --insecure (OLLAMAMAX_INSECURE) on a network you trust",
			cfg.HTTPAddr)
	case errors.Is(err, dispatcher.ErrOpenFleet):
		return cli.Explain(err, "refusing to open the embedded NATS on %s without authentication: anyone who reaches it could read every prompt and answer and delete the queue; create an auth directory with 'ollamaq auth init DIR' and pass --auth-dir DIR (OLLAMAMAX_AUTH_DIR), or pass --insecure (OLLAMAMAX_INSECURE) on a network you trust",
			cfg.Embedded.Listen)
	case errors.As(err, &inUse):
		holder := "another server"
		if inUse.PID != 0 {
			holder += fmt.Sprintf(" (pid %d)", inUse.PID)
		}
		return cli.Explain(err, "store directory %s is in use by %s; choose another with --store-dir or OLLAMAMAX_STORE_DIR", inUse.Dir, holder)
	}
	return err
}

// defaultStoreDir is $XDG_STATE_HOME/ollamamax/jetstream, or under ~/.local/state.
func defaultStoreDir() string {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return filepath.Join(os.TempDir(), "ollamamax", "jetstream")
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "ollamamax", "jetstream")
}
