package main

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"

	"github.com/ollamamax/ollamamax/pkg/auth"
)

// authUsage and authMore are the help of 'ollamaq auth', before and after
// the list of its commands.
const (
	authUsage = `Keeps the auth directory: the NATS operator, the accounts and the signing
keys of the roles (client, worker, dispatcher, admin), and the credentials
issued with them. A dispatcher given the directory (--auth-dir) runs its
embedded NATS in operator mode and lets in only those credentials, each
with its role's permissions (docs/security.md). The directory holds seeds:
keep it like a private key. No command prints a seed unless told to.

The directory is --dir, else $OLLAMAMAX_AUTH_DIR, else
~/.config/ollamamax/auth.
`
	authMore = `Adding a GPU box:
  ollamaq auth add gpu7 --role worker             # prints the credentials file
  scp ~/.config/ollamamax/auth/creds/gpu7.creds gpu7:
  worker --nats-url nats://gateway:4222 --nats-creds gpu7.creds   # on gpu7

Examples:
  ollamaq auth init
  dispatcher --auth-dir ~/.config/ollamamax/auth --nats-listen 0.0.0.0:4222
  ollamaq auth add alice --role client --expires 30d
  ollamaq auth list
  ollamaq auth revoke alice
  ollamaq auth export > ollamamax-auth.conf       # for an existing NATS cluster
`
)

// authDirFlag defines --dir on fs and returns where it points once parsed:
// the flag, else $OLLAMAMAX_AUTH_DIR, else the default under the user's
// configuration directory.
func authDirFlag(fs *flag.FlagSet) func(e *env) string {
	dir := fs.String("dir", "", "the auth `directory` (default $OLLAMAMAX_AUTH_DIR, else ~/.config/ollamamax/auth)")
	return func(e *env) string {
		if *dir != "" {
			return *dir
		}
		return defaultAuthDir(e.getenv)
	}
}

// defaultAuthDir is $OLLAMAMAX_AUTH_DIR, else $XDG_CONFIG_HOME/ollamamax/auth,
// else ~/.config/ollamamax/auth.
func defaultAuthDir(getenv func(string) string) string {
	if d := getenv("OLLAMAMAX_AUTH_DIR"); d != "" {
		return d
	}
	base := getenv("XDG_CONFIG_HOME")
	if base == "" {
		base = filepath.Join(getenv("HOME"), ".config")
	}
	return filepath.Join(base, "ollamamax", "auth")
}

// openAuth opens the auth directory; on failure it has said why and
// returns the exit code.
func (e *env) openAuth(dir string) (*auth.Dir, int, bool) {
	d, err := auth.Open(dir)
	if err != nil {
		return nil, e.authFailed(err), false
	}
	return d, exitOK, true
}

// authFailed prints an error of the auth directory and returns its exit
// code: a bad name, role or option is usage; the rest failed.
func (e *env) authFailed(err error) int {
	msg := strings.TrimPrefix(err.Error(), "auth: ")
	for _, usage := range []error{auth.ErrInvalidName, auth.ErrInvalidRole, auth.ErrInvalidOption} {
		if errors.Is(err, usage) {
			return e.fail(exitUsage, "%s", msg)
		}
	}
	return e.fail(exitFailed, "%s", msg)
}
