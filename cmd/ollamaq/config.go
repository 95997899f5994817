package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	daemon "github.com/ollamamax/ollamamax/internal/cli" // The daemons' settings; cli is the tests' runner here.
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// configUsage and configMore are the help of 'ollamaq config', before and
// after the list of its commands.
const (
	configUsage = `Manages the fleet's shared settings, in the KV bucket ollamaq_config: the
entry dispatcher holds name=value lines (as in a --config file) that every
dispatcher applies, the entry worker those every worker applies. Each process
watches its entry and reloads when it changes, as on SIGHUP; its own command
line, --config file and environment come first, so a setting one of them
gives is not changed by the entry. Only settings a reload applies may be
shared (docs/operations.md, "Reloading configuration"); set checks the names
and that the values parse, and each process logs a value it refuses. Each set
and unset writes an audit record ('ollamaq audit --kind admin'); under NATS
auth these commands need admin credentials.
`
	configMore = `Examples:
  ollamaq config set dispatcher shared.conf
  printf 'queue-wait=45s\nmax-queued=200\n' | ollamaq config set dispatcher -
  ollamaq config set worker - <<< 'log-level=debug'
  ollamaq config show
  ollamaq config unset worker
`
)

// configTimeout bounds each config command once connected.
const configTimeout = 30 * time.Second

// configEntries are the entries of the bucket, with the settings each may
// hold.
var configEntries = map[string][]daemon.Reloadable{job.ConfigDispatcher: daemon.DispatcherReloadable, job.ConfigWorker: daemon.WorkerReloadable}

// configRow is one entry as show prints it.
type configRow struct {
	Entry    string    `json:"entry"`
	Settings string    `json:"settings"`
	Revision uint64    `json:"revision"`
	Updated  time.Time `json:"updated"`
}

// entryArg checks that arg names an entry.
func (e *env) entryArg(cmd, arg string) (string, int) {
	if _, ok := configEntries[arg]; !ok {
		return "", e.fail(exitUsage, "config %s: no entry %q: want %s or %s", cmd, arg, job.ConfigDispatcher, job.ConfigWorker)
	}
	return arg, exitOK
}

// withConfig connects and binds the bucket of shared settings.
func (e *env) withConfig(ctx context.Context, work func(ctx context.Context, q *queue.Queue, kv jetstream.KeyValue) int) int {
	return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
		ctx, cancel := context.WithTimeout(ctx, configTimeout)
		defer cancel()
		kv, err := q.Config(ctx)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return e.fail(exitConnect, "no shared settings bucket on this NATS server: start a dispatcher of this version (it creates it) first")
		}
		if err != nil {
			return e.fail(exitConnect, "%v", err)
		}
		return work(ctx, q, kv)
	})
}

// auditConfig records a change of entry as a management action.
func (e *env) auditConfig(ctx context.Context, q *queue.Queue, entry, change string) error {
	return audit.Publish(ctx, q.JetStream(), audit.Record{Time: e.now().UTC(), Kind: job.AuditAdmin, Requester: e.requester(),
		Action: "config." + entry + "." + change, Outcome: audit.Done})
}

func writeConfig(w io.Writer, rows []configRow, now time.Time) {
	for i, r := range rows {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "# %s\t(revision %d, %s ago)\n", r.Entry, r.Revision, age(now.Sub(r.Updated)))
		_ = tw.Flush() // Output errors end the command anyway.
		fmt.Fprint(w, r.Settings)
		if r.Settings != "" && !strings.HasSuffix(r.Settings, "\n") {
			fmt.Fprintln(w)
		}
	}
}
