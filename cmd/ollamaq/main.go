// Command ollamaq is the OllamaMax command line: it talks to the queue over
// NATS directly, so it works where no dispatcher runs.
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const usage = `Usage: ollamaq [global flags] COMMAND [flags] [args]

Commands:
  run MODEL PROMPT   stream a reply to PROMPT from MODEL through the queue
  nodes              list the workers, their models, slots and health

Global flags:
  --server URL       NATS server (default $NATS_URL or nats://127.0.0.1:4222)
  --creds FILE       NATS credentials file (default $NATS_CREDS)

Run 'ollamaq COMMAND --help' for a command's flags and examples.
`

// Exit codes scripts can rely on.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and failed (a job error, for instance)
	exitUsage   = 2 // bad flags or arguments
	exitConnect = 3 // cannot reach NATS or the queue
)

// env is what every command gets.
type env struct {
	stdout, stderr io.Writer
	server, creds  string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("ollamaq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&e.server, "server", cli.Env("NATS_URL", nats.DefaultURL), "NATS server")
	fs.StringVar(&e.creds, "creds", cli.Env("NATS_CREDS", ""), "NATS credentials file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, e, rest)
	case "nodes":
		return cmdNodes(ctx, e, rest)
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "ollamaq: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// connect opens the NATS connection and binds the queue.
func (e *env) connect(ctx context.Context) (*nats.Conn, *queue.Queue, error) {
	opts := []nats.Option{nats.Name("ollamaq"), nats.Timeout(5 * time.Second)}
	if e.creds != "" {
		if _, err := os.Stat(e.creds); err != nil {
			return nil, nil, fmt.Errorf("credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(e.creds))
	}
	nc, err := nats.Connect(e.server, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w", e.server, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := queue.Open(octx, js)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, q, nil
}

// parse parses a command's flags; it returns ok=false with the exit code to use.
func parse(fs *flag.FlagSet, args []string, e *env, synopsis string) (int, bool) {
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, synopsis)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}
