package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go/jetstream"
	daemon "github.com/ollamamax/ollamamax/internal/cli" // The daemons' settings; cli is the tests' runner here.
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const configSetSynopsis = `Usage: ollamaq config set ENTRY FILE

Replaces the shared settings of ENTRY (dispatcher or worker) with FILE ("-":
standard input): name=value lines, as in a --config file, of settings a
reload applies. Every running process of that role reloads within moments,
logging what changed, or, for a value it refuses, why it kept its settings;
processes started later apply it before they serve. It refuses, changing
nothing, lines that are not name=value, names that cannot be shared and
values that do not parse. An empty FILE shares nothing, as unset.

Examples:
  ollamaq config set dispatcher shared.conf
  printf 'queue-wait=45s\nmax-queued=200\n' | ollamaq config set dispatcher -
`

// maxConfigBytes bounds a FILE: the bucket's largest value (streams/kv_config.json).
const maxConfigBytes = 64 << 10

func cmdConfigSet(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 2 {
			return e.fail(exitUsage, "config set: want ENTRY and FILE (see --help)")
		}
		entry, code := e.entryArg("set", args[0])
		if code != exitOK {
			return code
		}
		in := e.stdin
		if args[1] != "-" {
			f, err := os.Open(args[1])
			if err != nil {
				return e.fail(exitUsage, "config set: %v", err)
			}
			defer func() { _ = f.Close() }() // Read only.
			in = f
		}
		b, err := io.ReadAll(io.LimitReader(in, maxConfigBytes+1))
		if err != nil {
			return e.fail(exitFailed, "config set: read %s: %v", args[1], err)
		}
		if len(b) > maxConfigBytes {
			return e.fail(exitUsage, "config set: %s is larger than the %d bytes an entry holds", args[1], maxConfigBytes)
		}
		if err := daemon.CheckShared(string(b), configEntries[entry]); err != nil {
			return e.fail(exitUsage, "config set %s: %s %v; nothing changed", entry, args[1], err)
		}
		return e.withConfig(ctx, func(ctx context.Context, q *queue.Queue, kv jetstream.KeyValue) int {
			rev, err := kv.Put(ctx, entry, b)
			if err != nil {
				return e.fail(exitConnect, "write shared settings %s: %v", entry, err)
			}
			fmt.Fprintf(e.stdout, "shared settings %s set (revision %d): every %s reloads\n", entry, rev, entry)
			if err := e.auditConfig(ctx, q, entry, "set"); err != nil {
				return e.fail(exitFailed, "shared settings %s set, but the audit record was not written: %v", entry, err)
			}
			return exitOK
		})
	}
}
