package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const configShowSynopsis = `Usage: ollamaq config show [--json] [ENTRY]

Prints the shared settings: each entry (dispatcher, worker; or the one
named) with its revision and when it was set, then its lines as they are
stored.

Examples:
  ollamaq config show
  ollamaq config show dispatcher --json | jq -r '.[0].settings'
`

func cmdConfigShow(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the entries as JSON")
	return func(ctx context.Context, e *env, args []string) int {
		entries := []string{"dispatcher", "worker"}
		switch len(args) {
		case 0:
		case 1:
			entry, code := e.entryArg("show", args[0])
			if code != exitOK {
				return code
			}
			entries = []string{entry}
		default:
			return e.fail(exitUsage, "config show: want at most one entry (see --help)")
		}
		return e.withConfig(ctx, func(ctx context.Context, _ *queue.Queue, kv jetstream.KeyValue) int {
			var rows []configRow
			for _, entry := range entries {
				v, err := kv.Get(ctx, entry)
				if errors.Is(err, jetstream.ErrKeyNotFound) {
					continue // Never set, or unset.
				}
				if err != nil {
					return e.fail(exitConnect, "read shared settings %s: %v", entry, err)
				}
				rows = append(rows, configRow{Entry: entry, Settings: string(v.Value()), Revision: v.Revision(), Updated: v.Created().UTC()})
			}
			slices.SortFunc(rows, func(a, b configRow) int { return slices.Index(entries, a.Entry) - slices.Index(entries, b.Entry) })
			return printList(e, *asJSON, rows, writeConfig, fmt.Sprintf("no shared settings: every process runs on its own (ollamaq config set %s FILE sets some)", entries[0]))
		})
	}
}
