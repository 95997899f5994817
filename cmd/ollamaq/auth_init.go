package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/auth"
)

const authInitSynopsis = `Usage: ollamaq auth init [DIR]

Creates an auth directory in DIR (default --dir, $OLLAMAMAX_AUTH_DIR, else
~/.config/ollamamax/auth): a NATS operator, the system account SYS, the
account OLLAMAMAX with JetStream and one scoped signing key per role, and two
credentials: creds/dispatcher.creds, for the dispatcher that runs NATS on the
directory (dispatcher --auth-dir DIR), and creds/sys.creds, with which
'auth revoke' tells running servers. Files are 0600, directories 0700; no
seed is printed. It refuses a directory that holds an operator already.

Examples:
  ollamaq auth init
  ollamaq auth init /etc/ollamamax/auth && dispatcher --auth-dir /etc/ollamamax/auth
`

func cmdAuthInit(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	return func(_ context.Context, e *env, args []string) int {
		dir := dirOf(e)
		switch len(args) {
		case 0:
		case 1:
			dir = args[0]
		default:
			return e.fail(exitUsage, "auth init: want at most one DIR (see --help)")
		}
		d, err := auth.Init(dir)
		if err != nil {
			return e.authFailed(err)
		}
		fmt.Fprintf(e.stdout, "created the auth directory %s\n", d.Path())
		fmt.Fprintf(e.stdout, "  dispatcher credentials: %s\n", d.CredsPath(auth.DispatcherUser))
		fmt.Fprintf(e.stdout, "  system credentials:     %s\n", d.CredsPath(auth.SysUser))
		fmt.Fprintf(e.stdout, "next: dispatcher --auth-dir %s, then ollamaq auth add NAME --role worker|client|admin\n", d.Path())
		return exitOK
	}
}
