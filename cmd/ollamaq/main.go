// Command ollamaq is the OllamaMax command line: batch submission, queue and
// fleet status, and single requests. It talks to the queue over NATS
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

const usage = `Usage: ollamaq [connection flags] COMMAND [flags] [args]

Batch files (OpenAI Batch API format, one request per line):
  batch submit FILE    queue every line of FILE as batch work; prints the batch ID
  batch status ID      where a batch is: queued, running, done, failed
  batch wait ID        follow a batch until it is done, with progress
  batch results ID     write the results as OpenAI Batch output lines
  batch list           every batch the queue knows
  batch cancel ID      drop a batch's queued lines and stop its running ones

The fleet:
  nodes                the workers, their models, slots and health
  queues               jobs waiting and running, per model and class
  top                  nodes and queues, refreshed live

Dead letters (jobs given up on):
  dlq list             the dead letters and why
  dlq show SEQ         one, with its request
  dlq requeue SEQ...   put them back on their queues

One request:
  run MODEL PROMPT     stream a reply to PROMPT from MODEL through the queue

Connection flags (also accepted after the command):
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
a batch is incomplete, unknown batch); 2 usage; 3 cannot connect (server
unreachable, credentials refused or missing, no OllamaMax queue there).
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
	fs.Usage = func() { fmt.Fprint(e.stderr, usage) }
	e.conn.register(fs, e.getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "help":
		return e.help(ctx, rest)
	case "run":
		return cmdRun(ctx, e, rest)
	case "nodes":
		return cmdNodes(ctx, e, rest)
	case "queues":
		return cmdQueues(ctx, e, rest)
	case "top":
		return cmdTop(ctx, e, rest)
	case "batch":
		return cmdBatch(ctx, e, rest)
	case "dlq":
		return cmdDLQ(ctx, e, rest)
	}
	fmt.Fprintf(e.stderr, "ollamaq: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// help prints the usage, or a command's with 'help COMMAND'.
func (e *env) help(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	h := &env{stdout: e.stdout, stderr: e.stdout, stdin: e.stdin, getenv: e.getenv, now: e.now}
	return h.run(ctx, append(args, "--help"))
}

// parse parses a command's flags, connection flags included; it returns
// ok=false with the exit code to use.
func parse(fs *flag.FlagSet, args []string, e *env, synopsis string) (int, bool) {
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			if !connFlagNames[f.Name] {
				printFlag(e.stderr, f)
			}
		})
		fmt.Fprintln(e.stderr, "\nConnection flags as for ollamaq (see 'ollamaq help').")
	}
	e.conn.register(fs, nil)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// printFlag prints one flag as flag.PrintDefaults does.
func printFlag(w io.Writer, f *flag.Flag) {
	name, use := flag.UnquoteUsage(f)
	line := "  --" + f.Name
	if name != "" {
		line += " " + name
	}
	line += "\n    \t" + use
	if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
		line += fmt.Sprintf(" (default %s)", f.DefValue)
	}
	fmt.Fprintln(w, line)
}

// fail prints an error as one sentence and returns code.
func (e *env) fail(code int, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "ollamaq: "+format+"\n", a...)
	return code
}
