package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const keysRevokeSynopsis = `Usage: ollamaq keys revoke ID

Revokes key ID (see 'ollamaq keys list'): every dispatcher refuses it with
401 as soon as its watch of the bucket sees the change, within milliseconds.
The record stays, revoked, so the audit trail and usage still name it. A
revoked key cannot be used or rotated again; create a new one.

Examples:
  ollamaq keys revoke k1f3x9q2m7ab
  ollamaq keys list --json | jq -r '.[] | select(.tenant == "acme" and .state == "active") | .id' | xargs -n1 ollamaq keys revoke
`

func cmdKeysRevoke(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "keys revoke: want one key ID (see --help)")
		}
		now := e.now()
		return e.withKeys(ctx, func(ctx context.Context, q *queue.Queue, s *apikey.Store) int {
			k, _, err := s.Get(ctx, args[0])
			if err != nil {
				return e.keyFailed(err)
			}
			if !k.Revoked.IsZero() {
				fmt.Fprintf(e.stdout, "key %s (%s, tenant %s) was revoked already, at %s\n", k.ID, k.Name, k.Tenant, k.Revoked.UTC().Format(time.RFC3339))
				return exitOK
			}
			if k, err = s.Revoke(ctx, k.ID, now); err != nil {
				return e.keyFailed(err)
			}
			fmt.Fprintf(e.stdout, "revoked key %s (%s, tenant %s): dispatchers refuse it from now on\n", k.ID, k.Name, k.Tenant)
			if err := e.auditKey(ctx, q, actionRevoke, k); err != nil {
				return e.auditFailed(k.ID, "was revoked", err)
			}
			return exitOK
		})
	}
}
