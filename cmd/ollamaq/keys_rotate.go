package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const keysRotateSynopsis = `Usage: ollamaq keys rotate [--json] ID

Gives key ID a new secret and prints it on stdout, once, as create does. The
old secret stops working as soon as each dispatcher's watch sees the change
(milliseconds): put the new one where the client reads it first, or expect
its requests to get 401 until then. The ID, tenant, models and bounds stay;
usage and the audit trail go on under the same ID.

Examples:
  ollamaq keys rotate k1f3x9q2m7ab
  ollamaq keys rotate --json k1f3x9q2m7ab | jq -r .secret > ci.key
`

func cmdKeysRotate(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, `print {"key": the record, "secret": the new secret} as JSON`)
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "keys rotate: want one key ID (see --help)")
		}
		now := e.now()
		return e.withKeys(ctx, func(ctx context.Context, q *queue.Queue, s *apikey.Store) int {
			k, secret, err := s.Rotate(ctx, args[0], now)
			if err != nil {
				return e.keyFailed(err)
			}
			notice := fmt.Sprintf("rotated key %s (%s, tenant %s): the old secret no longer works; the new one above is shown only now and will not be shown again",
				k.ID, k.Name, k.Tenant)
			if code := e.printSecret(*asJSON, k, secret, notice); code != exitOK {
				return code
			}
			if err := e.auditKey(ctx, q, actionRotate, k); err != nil {
				return e.auditFailed(k.ID, "was rotated", err)
			}
			return exitOK
		})
	}
}
