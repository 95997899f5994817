package main

import (
	"context"
	"flag"
	"fmt"
)

const authUpgradeSynopsis = `Usage: ollamaq auth upgrade [flags]

Brings the role permissions of an auth directory made by an older version of
OllamaMax up to this one's: newer versions use subjects (audit records, API
keys, rate-limit charges) that older role templates do not allow, and their
processes would be refused them. Credentials already issued keep working:
the templates live in the account, not in the users' credentials.

The account JWT is re-signed and pushed, like a revocation, through the
system account to the NATS server at --server. A dispatcher that embeds the
server (--auth-dir) upgrades its directory by itself at start; run this for
a NATS cluster of your own (then 'ollamaq auth export' again for its config).

Examples:
  ollamaq auth upgrade
  ollamaq auth upgrade --server nats://gateway:4222
`

func cmdAuthUpgrade(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	sysCreds := fs.String("sys-creds", "", "system account credentials `file` to push with (default DIR/creds/sys.creds)")
	noPush := fs.Bool("no-push", false, "only upgrade the directory; servers that read it apply the upgrade at their next start")
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 0 {
			return e.fail(exitUsage, "auth upgrade: takes no arguments (see --help)")
		}
		d, code, ok := e.openAuth(dirOf(e))
		if !ok {
			return code
		}
		accountJWT, err := d.Upgrade()
		if err != nil {
			return e.authFailed(err)
		}
		if accountJWT == "" {
			fmt.Fprintf(e.stdout, "the role permissions in %s are up to date\n", d.Path())
			return exitOK
		}
		fmt.Fprintf(e.stdout, "upgraded the role permissions in %s\n", d.Path())
		if *noPush {
			return exitOK
		}
		return e.pushRecorded(ctx, d, *sysCreds, accountJWT,
			"the upgrade is recorded in %s: servers that read it apply it at their next start",
			"new connections get the new permissions")
	}
}
