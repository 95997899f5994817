// Command worker serves OllamaMax jobs with the Ollama beside it: it pulls jobs
// for the models that Ollama has, only as many as it has free slots.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ollama/ollama/envconfig"
	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/tracing"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

const synopsis = `Usage: worker [flags]

Runs beside one Ollama. It finds the models that Ollama has, pulls queued jobs
for them only as far as it has free slots, streams Ollama's answers back to the
requester, and reports its health and inventory to the node bucket. If Ollama
stops answering, the worker stops pulling and resumes by itself when it answers.

'worker healthcheck' exits 0 when the worker's /readyz answers 200, for a
container's health check (see worker healthcheck --help).

Settings come from the command line, then a --config file of name=value
lines (flag names or their variables), then the environment, then the
fleet's shared settings: the entry "worker" of the ollamaq_config bucket,
which every worker watches. SIGHUP reads the file again and applies what
changed of --log-level, --slots, --interactive-reserve, --label and
--grace, without stopping a job; a change of the shared entry does the same. A reload with a bad value
changes nothing and logs why; other settings are logged as needing a
restart. The NATS client certificate files are read at each (re)connect.

Examples:
  worker                                          # Ollama at $OLLAMA_HOST, NATS at 127.0.0.1:4222
  worker --nats-url nats://gateway:4222 --ollama http://127.0.0.1:11434 --slots 4
  worker --nats-url nats://gateway:4222 --nats-creds gpu7.creds   # from: ollamaq auth add gpu7 --role worker
  worker --nats-url tls://gateway:4222 --nats-creds gpu7.creds --nats-ca ca.pem   # a server with TLS
  OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 worker   # traces to a collector

` + tracing.Help + `
Flags (each also read from the environment variable in brackets):
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		cli.Exit("worker healthcheck", healthcheck(context.Background(), os.Args[2:]))
		return
	}
	cli.Exit("worker", run())
}

// reloadable says whether a reload applies flag name (worker.Settings);
// the rest take a restart.
func reloadable(name string) bool { return cli.Find(cli.WorkerReloadable, name) != nil }

// sharable says whether the shared settings may set flag name.
func sharable(name string) bool {
	r := cli.Find(cli.WorkerReloadable, name)
	return r != nil && r.Shared
}

// sharedFrom names the shared settings in errors.
const sharedFrom = "the shared settings (bucket " + job.ConfigBucket + ", entry " + job.ConfigWorker + ")"

// flags is one parse of the command line, the configuration file, the
// environment and the shared settings.
type flags struct {
	fs        *flag.FlagSet
	cfg       worker.Config
	creds     string
	ollama    string
	clientTLS *cli.ClientTLS
	log       *cli.LogOptions
}

func parse(l cli.Layers) (*flags, bool, error) {
	f := &flags{cfg: worker.DefaultConfig("", nil)}
	cfg := &f.cfg
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	f.fs = fs
	fs.Usage = func() { cli.Usage(fs.Output(), synopsis, fs.PrintDefaults)() } // To the output at the time: Layers.Output.
	cli.AddConfigFlag(fs)
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server or cluster [NATS_URL]")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file, from 'ollamaq auth add ID --role worker'; its name is the worker ID [NATS_CREDS]")
	f.clientTLS = cli.ClientTLSFlags(fs)
	fs.StringVar(&f.ollama, "ollama", envconfig.Host().String(), "Ollama base URL (default from OLLAMA_HOST, read as Ollama reads it)")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "jobs run at once; reloadable [OLLAMA_NUM_PARALLEL]")
	fs.IntVar(&cfg.InteractiveReserve, "interactive-reserve", cfg.InteractiveReserve, "slots only interactive jobs may take, so that one finds a slot free while async and batch work runs; never the last slot (a 1-slot worker reserves none); 0 lets any lane take any slot (docs/scheduling.md); reloadable [OLLAMAMAX_INTERACTIVE_RESERVE]")
	fs.Int64Var(&cfg.FetchBytes, "fetch-bytes", cfg.FetchBytes, "bytes of jobs one pull may bring at once, at least the largest NATS message; large requests then wait their turn instead of flooding the connection [OLLAMAMAX_FETCH_BYTES]")
	fs.StringVar(&cfg.ID, "id", "", "worker ID in the node bucket (default: the credentials' name, else hostname and Ollama port) [OLLAMAMAX_WORKER_ID]")
	fs.Func("label", "a key=value label for choosing workers, e.g. gpu=a100 (repeatable, or comma-separated); reloadable [OLLAMAMAX_WORKER_LABELS, comma-separated]", func(v string) error {
		return addLabels(cfg, v)
	})
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address for /metrics, /healthz and /readyz; empty for none [OLLAMAMAX_WORKER_LISTEN]")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "how often to refresh the inventory and node record, at most 5s; a silent worker's record expires three heartbeats after its last refresh")
	fs.DurationVar(&cfg.ColdAfter, "cold-after", cfg.ColdAfter, "warm first: take a job of a model this Ollama would have to load only after the jobs of its loaded models, and only once the model's oldest job has waited this long (or --cold-backlog, or no worker has it loaded); 0 takes any job in arrival order (docs/scheduling.md) [OLLAMAMAX_COLD_AFTER]")
	fs.IntVar(&cfg.ColdBacklog, "cold-backlog", cfg.ColdBacklog, "warm first: take such a job sooner when the model's waiting jobs reach this many per slot of the workers that have it loaded; 0 for --cold-after alone [OLLAMAMAX_COLD_BACKLOG]")
	fs.DurationVar(&cfg.StarveAfter, "starve-after", cfg.StarveAfter, "warm first: a model no worker has loaded whose oldest job waited this long goes before the loaded models' work (default 5 × --cold-after) [OLLAMAMAX_STARVE_AFTER]")
	fs.DurationVar(&cfg.AffinityWait, "affinity-wait", cfg.AffinityWait, "session affinity: hand a job that prefers another worker (the one that served its session's previous turn) back for that worker (on its first two deliveries at most) while the job is younger than this and that worker has its model loaded and a free slot; 0 runs every job where it is taken (docs/scheduling.md) [OLLAMAMAX_AFFINITY_WAIT]")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "on SIGTERM, how long in-flight jobs may finish before they are handed back; reloadable [OLLAMAMAX_GRACE]")
	fs.DurationVar(&cfg.Queue.AckWait, "ack-wait", 0, "redeliver a job whose worker is silent this long; set the same on all processes (default from streams/consumer.json: 10s) [OLLAMAMAX_ACK_WAIT]")
	f.log = cli.AddLogFlags(fs)
	if help, err := cli.ParseLayers(fs, l); help || err != nil {
		return nil, help, err
	}
	if _, err := cli.ParseLevel(f.log.Level); err != nil {
		return nil, false, err
	}
	if cfg.Slots < 1 {
		return nil, false, fmt.Errorf("--slots %d: want at least 1", cfg.Slots)
	}
	if cfg.InteractiveReserve < 0 {
		return nil, false, fmt.Errorf("--interactive-reserve %d: want 0 or more", cfg.InteractiveReserve)
	}
	return f, false, nil
}

// settings are the reloadable part of f, with the names of the other
// flags whose values differ from those of running, the parse the process
// started with.
func (f *flags) settings(running *flags) worker.Settings {
	level, _ := cli.ParseLevel(f.log.Level) // parse checked it.
	return worker.Settings{LogLevel: level, Slots: f.cfg.Slots, InteractiveReserve: f.cfg.InteractiveReserve, Labels: f.cfg.Labels, Grace: f.cfg.Grace,
		Restart: cli.Changed(running.fs, f.fs, reloadable)}
}

func run() error {
	hostname, _ := os.Hostname() // An empty hostname just makes the default ID shorter.
	args := os.Args[1:]
	f, help, err := parse(cli.Layers{Args: args})
	if help || err != nil {
		return err
	}
	log, level, err := f.log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	cfg := f.cfg
	u, err := url.Parse(f.ollama)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--ollama %q is not a URL such as http://127.0.0.1:11434", f.ollama)
	}
	cfg.Ollama, cfg.Logger, cfg.Level = u, log, level
	if f.creds != "" {
		if err := useCreds(&cfg, f.creds); err != nil {
			return err
		}
	}
	tlsOpts, err := f.clientTLS.Options()
	if err != nil {
		return err
	}
	cfg.NATSOptions = append(cfg.NATSOptions, tlsOpts...)
	if cfg.ID == "" {
		cfg.ID = defaultID(hostname, u)
	}
	cfg.Reconfigure = func(shared string) (worker.Settings, error) {
		next, _, err := parse(cli.Layers{Args: args, Shared: shared, SharedFrom: sharedFrom, Sharable: sharable})
		if err != nil {
			return worker.Settings{}, err
		}
		if err := next.clientTLS.Check(); err != nil {
			log.Warn("the NATS client certificate files do not load: the next reconnect will fail", "err", err)
		}
		return next.settings(f), nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tp, flushTraces, err := tracing.ForDaemon(ctx, "ollamamax-worker", cfg.ID, log)
	if err != nil {
		return err
	}
	defer flushTraces()
	cfg.Tracer = tp
	reload, stopHUP := cli.NotifyReload()
	defer stopHUP()
	cfg.Reload = reload
	err = worker.Run(ctx, cfg)
	if errors.Is(err, worker.ErrListen) {
		return cli.ListenError(err, "metrics and health", cfg.Listen, "listen", "OLLAMAMAX_WORKER_LISTEN")
	}
	return err
}

// useCreds connects with the credentials file path. Credentials issued for
// the worker role bind its node record and node commands to their name,
// which becomes the worker ID unless --id gives the same, and its inboxes
// to _INBOX_<name>; they may not create or update streams, so the worker
// waits for a dispatcher to apply streams/ (queue.Options.BindOnly).
func useCreds(cfg *worker.Config, path string) error {
	c, err := cli.ReadCreds(path, "--nats-creds")
	if err != nil {
		return err
	}
	cfg.NATSOptions = append(cfg.NATSOptions, c.Options()...)
	cfg.Queue.BindOnly = c.Role == auth.Worker
	switch {
	case c.InboxPrefix() == "":
		// Not bound to a name: any ID.
	case cfg.ID == "":
		cfg.ID = c.Name
	case cfg.ID != c.Name:
		return fmt.Errorf("--id %s differs from the name %s in the credentials %s, to which their permissions bind the node record and commands; drop --id, or issue credentials named %s (ollamaq auth add %s --role worker)",
			cfg.ID, c.Name, path, cfg.ID, cfg.ID)
	}
	return nil
}

// addLabels adds comma-separated key=value labels to cfg.
func addLabels(cfg *worker.Config, list string) error {
	for kv := range strings.SplitSeq(list, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if err := addLabel(cfg, kv); err != nil {
			return err
		}
	}
	return nil
}

func addLabel(cfg *worker.Config, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", kv)
	}
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels[k] = v
	return nil
}

// defaultID makes a worker ID from the hostname and the Ollama port, so that
// several workers on one machine differ.
func defaultID(hostname string, u *url.URL) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, hostname)
	if clean == "" {
		clean = "worker"
	}
	if p := u.Port(); p != "" {
		clean += "-" + p
	}
	return clean
}
