package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const configUnsetSynopsis = `Usage: ollamaq config unset ENTRY

Removes the shared settings of ENTRY (dispatcher or worker): every running
process of that role reloads without them, back to its own command line,
--config file, environment and defaults.

Examples:
  ollamaq config unset worker
`

func cmdConfigUnset(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "config unset: want one ENTRY (see --help)")
		}
		entry, code := e.entryArg("unset", args[0])
		if code != exitOK {
			return code
		}
		return e.withConfig(ctx, func(ctx context.Context, q *queue.Queue, kv jetstream.KeyValue) int {
			if err := kv.Delete(ctx, entry); err != nil {
				return e.fail(exitConnect, "remove shared settings %s: %v", entry, err)
			}
			fmt.Fprintf(e.stdout, "shared settings %s removed: every %s reloads without them\n", entry, entry)
			if err := e.auditConfig(ctx, q, entry, "unset"); err != nil {
				return e.fail(exitFailed, "shared settings %s removed, but the audit record was not written: %v", entry, err)
			}
			return exitOK
		})
	}
}
