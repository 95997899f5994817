package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

const authRevokeSynopsis = `Usage: ollamaq auth revoke [flags] NAME

Revokes NAME's credentials: the account JWT in the auth directory gets the
revocation, and is pushed through the system account to the NATS server at
--server (default nats://127.0.0.1:4222, the embedded server of a dispatcher
on this machine), which disconnects NAME at once and refuses it from then on,
also after restarts. In a cluster one server passes it to the others.

If no server can be reached the revocation is still recorded: an embedded
server applies it at its next start, and running the same command again
pushes it. New credentials for NAME: 'ollamaq auth add NAME' again.

Examples:
  ollamaq auth revoke alice
  ollamaq auth revoke gpu7 --server nats://gateway:4222
`

func cmdAuthRevoke(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	sysCreds := fs.String("sys-creds", "", "system account credentials `file` to push with (default DIR/creds/sys.creds)")
	noPush := fs.Bool("no-push", false, "only record the revocation; servers that read the directory apply it at their next start")
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "auth revoke: want one NAME (see --help)")
		}
		name, dir := args[0], dirOf(e)
		d, code, ok := e.openAuth(dir)
		if !ok {
			return code
		}
		u, accountJWT, err := d.Revoke(name)
		if err != nil {
			return e.authFailed(err)
		}
		fmt.Fprintf(e.stdout, "revoked %s (%s) in %s\n", u.Name, u.Role, d.Path())
		if *noPush {
			return exitOK
		}
		return e.pushRecorded(ctx, d, *sysCreds, accountJWT,
			"the revocation is recorded in %s: run this command again to push it",
			"the servers disconnect "+u.Name+" and refuse it from now on")
	}
}

// pushRecorded pushes accountJWT, a change already recorded in d, with the
// system account's credentials (d's sys user unless sysCreds), and reports
// the outcome: afterPush on success, recorded (with d's path) on failure.
func (e *env) pushRecorded(ctx context.Context, d *auth.Dir, sysCreds, accountJWT, recorded, afterPush string) int {
	creds := sysCreds
	if creds == "" {
		creds = d.CredsPath(auth.SysUser)
	}
	url, err := e.pushAccount(ctx, creds, accountJWT)
	if err != nil {
		code := exitConnect
		if errors.Is(err, auth.ErrPushRefused) {
			code = exitFailed
		}
		return e.fail(code, "%v; "+recorded, err, d.Path())
	}
	fmt.Fprintf(e.stdout, "pushed to %s: %s\n", url, afterPush)
	return exitOK
}

// pushAccount connects with the system account's credentials and pushes
// accountJWT. It returns the URL it used, and errors worded for a person.
func (e *env) pushAccount(ctx context.Context, credsFile, accountJWT string) (string, error) {
	c, err := auth.ReadCreds(credsFile)
	if err != nil {
		return "", fmt.Errorf("cannot push: %w", err)
	}
	url, opts, _, err := e.conn.options(e.getenv)
	if err != nil {
		return "", err
	}
	nc, err := nats.Connect(url, append(opts, c.Options()...)...)
	switch {
	case err != nil && refused(err):
		return url, fmt.Errorf("NATS at %s refused the system account's credentials %s (%v): is it running on this auth directory?", url, credsFile, err)
	case errors.Is(err, nats.ErrNoServers):
		return url, fmt.Errorf("cannot reach NATS at %s to push the revocation", url)
	case err != nil:
		return url, fmt.Errorf("cannot connect to NATS at %s: %v", url, err)
	}
	defer nc.Close()
	pctx, cancel := context.WithTimeout(ctx, e.conn.timeout)
	defer cancel()
	err = auth.PushAccount(pctx, nc, accountJWT)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return url, fmt.Errorf("NATS at %s does not take account updates: it is not in operator mode with a full resolver, or these are not its system account's credentials", url)
	case err != nil:
		return url, errors.New(strings.TrimPrefix(err.Error(), "auth: "))
	}
	return url, nil
}
