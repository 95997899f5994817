package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/auth"
)

const authExportSynopsis = `Usage: ollamaq auth export [--json] [--resolver-dir DIR]

Prints what an existing NATS server or cluster needs to trust the auth
directory: the operator JWT, the system account, and a full resolver block
that starts with the account JWTs, for nats-server.conf (every server of the
cluster gets the same block). No seed is exported. With --json: the
operator, the accounts' JWTs and the roles' signing keys and permission
templates, for nsc and scripts.

An operator made with nsc works too: the embedded server (dispatcher
--auth-dir DIR) needs only DIR/operator.jwt, naming the system account, and
DIR/accounts/*.jwt (nsc describe operator --raw; nsc describe account NAME
--raw); docs/security.md has the steps.

Examples:
  ollamaq auth export > /etc/nats/ollamamax-auth.conf    # then: include ollamamax-auth.conf
  ollamaq auth export --json | jq -r '.roles[] | .role + " " + .signing_key'
`

func cmdAuthExport(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	asJSON := fs.Bool("json", false, "print the JWTs and role templates as JSON")
	resolverDir := fs.String("resolver-dir", "jwt", "where each server keeps the account JWTs (relative to its working directory)")
	return func(_ context.Context, e *env, _ []string) int {
		t, err := auth.LoadTrust(dirOf(e))
		if err != nil {
			return e.authFailed(err)
		}
		if *asJSON {
			return e.printJSON(t)
		}
		fmt.Fprint(e.stdout, t.ServerConfig(*resolverDir))
		return exitOK
	}
}
