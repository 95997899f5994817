package main

import (
	"context"
	"flag"

	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const keysListSynopsis = `Usage: ollamaq keys list [--json]

Lists the HTTP API keys, revoked ones too, by tenant and name: ID, name,
tenant, role, the models it may use, its bounds per minute (- for none),
when it was created and expires, and its state: active, expired or revoked.
--json prints the records as stored, without the hash of the secret, with
their state. No command shows a secret again.

Examples:
  ollamaq keys list
  ollamaq keys list --json | jq -r '.[] | select(.state == "active" and .tenant == "acme") | .id'
`

func cmdKeysList(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the keys as JSON")
	return func(ctx context.Context, e *env, _ []string) int {
		return e.withKeys(ctx, func(ctx context.Context, _ *queue.Queue, s *apikey.Store) int {
			keys, err := s.List(ctx)
			if err != nil {
				return e.keyFailed(err)
			}
			rows := make([]keyRow, len(keys))
			for i, k := range keys {
				rows[i] = toKeyRow(k, e.now())
			}
			return printList(e, *asJSON, rows, writeKeys, "no API keys (ollamaq keys create NAME --tenant TENANT makes one)")
		})
	}
}
