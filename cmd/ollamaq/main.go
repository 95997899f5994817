// Command ollamaq is the OllamaMax command line: batch submission, queue and
// fleet status, single requests, HTTP API keys, and the auth directory that
// issues NATS credentials for each role. It talks to the queue over NATS
// directly, so it works where no dispatcher runs, and it reads the nats
// CLI's saved contexts, so an operator who uses nats is already connected.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"
)

// usageMore ends 'ollamaq help', after the list of commands.
const usageMore = `Connection flags (also accepted after the command):
  --server URL         NATS server(s), comma-separated        [$NATS_URL]
  --context NAME       a saved nats CLI context                [$NATS_CONTEXT]
  --creds FILE         user credentials                        [$NATS_CREDS]
  --nkey FILE          user NKey seed                          [$NATS_NKEY]
  --user, --password   user and password                       [$NATS_USER, $NATS_PASSWORD]
  --token TOKEN        authentication token                    [$NATS_TOKEN]
  --tlscert, --tlskey  client certificate and key              [$NATS_CERT, $NATS_KEY]
  --tlsca FILE         certificate authorities to trust        [$NATS_CA]
  --timeout DURATION   connect and request timeout (5s)        [$NATS_TIMEOUT]
Without --server, ollamaq uses the context named by --context or $NATS_CONTEXT,
else the one the nats CLI has selected (~/.config/nats/context.txt), else
nats://127.0.0.1:4222. Flags and environment override the context's fields.

Read commands take --json. 'ollamaq help COMMAND' shows a command's flags and
examples.

Exit status: 0 ok; 1 the command ran and failed (a job or batch line failed,
a batch is incomplete, unknown batch or key); 2 usage; 3 cannot connect
(server unreachable, credentials refused or missing or not permitted, no
OllamaMax queue or key bucket there).
`

// Exit codes scripts can rely on.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and failed (a job error, for instance)
	exitUsage   = 2 // bad flags or arguments
	exitConnect = 3 // cannot reach NATS or the queue
)

// env is what every command gets: where to write, how to connect, and the
// parts of the outside world that tests replace.
type env struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	conn           connFlags
	getenv         func(string) string
	now            func() time.Time
	// terminal says stderr is a terminal (progress bars); screen says stdout
	// is one (top redraws in place).
	terminal, screen bool
	// every is how often plain progress lines are printed when stderr is not
	// a terminal.
	every time.Duration
	// user is the name in the credentials connect used, "" without: the
	// requester token a role's permissions bind run to.
	user string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := &env{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv, now: time.Now,
		terminal: term.IsTerminal(int(os.Stderr.Fd())), screen: term.IsTerminal(int(os.Stdout.Fd())), every: 10 * time.Second}
	code := e.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code.
func (e *env) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("ollamaq", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, usage()) }
	e.conn.register(fs, e.getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(e.stderr, usage())
		return exitUsage
	}
	if fs.Arg(0) == "help" {
		return e.help(fs.Args()[1:])
	}
	return e.dispatch(ctx, root, "", fs.Args())
}

// fail prints an error as one sentence and returns code.
func (e *env) fail(code int, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "ollamaq: "+format+"\n", a...)
	return code
}
