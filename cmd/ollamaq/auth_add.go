package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
)

const authAddSynopsis = `Usage: ollamaq auth add [flags] NAME

Issues credentials for NAME with a role and writes them as a .creds file
(0600), by default DIR/creds/NAME.creds, whose path it prints. The file holds
the user's seed: hand it over like a password.

NAME is what the role's permissions are bound to: a client's or dispatcher's
requester token (its reply subjects are ollamaq.reply.NAME.>), a worker's ID
(its node record and node commands). Letters, digits, '-' and '_'.

Roles:
  client      submits jobs and reads its own replies; --lanes (or
              --batch-only) and --models narrow what it may submit
  worker      a GPU box: pulls jobs, answers them, reports its node record;
              its credentials are what joins a new box to the fleet
  dispatcher  an HTTP front end (one per dispatcher ID)
  admin       everything: ollamaq batch, dlq, nodes, queues

Examples:
  ollamaq auth add gpu7 --role worker
  ollamaq auth add alice --role client --expires 30d
  ollamaq auth add nightly --role client --batch-only --models llama3.2,qwen2.5:0.5b
  ollamaq auth add evals --role client --lanes async,batch   # never interactive
  ollamaq auth add ops --role admin --out ops.creds
  ollamaq auth add tmp --role client --expires 1h --out - | ssh box 'cat > tmp.creds'
`

func cmdAuthAdd(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	role := fs.String("role", "", "worker, client, dispatcher or admin (required)")
	expires := fs.String("expires", "", "how long the credentials are valid: 30d, 12h, 90m (default: until revoked)")
	batchOnly := fs.Bool("batch-only", false, "a client that may submit batch-class work only")
	lanes := fs.String("lanes", "", "a client that may submit jobs of these lanes only, comma-separated: interactive, async, batch (default: every lane)")
	models := fs.String("models", "", "a client that may submit jobs for these models only, comma-separated Ollama names (no patterns)")
	out := fs.String("out", "", "write the credentials to `file` instead of DIR/creds/NAME.creds; - prints them on stdout")
	return func(_ context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "auth add: want one NAME (see --help)")
		}
		name := args[0]
		r, err := auth.ParseRole(*role)
		if err != nil {
			return e.fail(exitUsage, "auth add: --role: want worker, client, dispatcher or admin")
		}
		o := auth.UserOptions{Role: r, BatchOnly: *batchOnly}
		if *expires != "" {
			if o.Expires, err = parseExpiry(*expires); err != nil {
				return e.fail(exitUsage, "auth add: --expires %q: %v", *expires, err)
			}
		}
		for l := range strings.SplitSeq(*lanes, ",") {
			if l = strings.TrimSpace(l); l == "" {
				continue
			}
			c, err := job.ParseClass(l)
			if err != nil {
				return e.fail(exitUsage, "auth add: --lanes: %q: want interactive, async or batch", l)
			}
			o.Lanes = append(o.Lanes, c)
		}
		for m := range strings.SplitSeq(*models, ",") {
			if m = strings.TrimSpace(m); m != "" {
				o.Models = append(o.Models, m)
			}
		}
		d, code, ok := e.openAuth(dirOf(e))
		if !ok {
			return code
		}
		switch *out {
		case "":
			o.CredsFile = d.CredsPath(name)
		case "-":
		default:
			o.CredsFile = *out
		}
		u, creds, err := d.AddUser(name, o)
		if err != nil {
			return e.authFailed(err)
		}
		if o.CredsFile == "" {
			if _, err := e.stdout.Write(creds); err != nil {
				return e.fail(exitFailed, "write credentials: %v", err)
			}
			return exitOK
		}
		fmt.Fprintln(e.stdout, u.CredsFile)
		if u.Role == auth.Worker {
			fmt.Fprintf(e.stderr, "copy it to the GPU box and start: worker --nats-url nats://DISPATCHER:4222 --nats-creds %s.creds\n", name)
		}
		return exitOK
	}
}

// parseExpiry parses a validity: a Go duration (12h, 90m) or whole days
// or weeks (30d, 2w).
func parseExpiry(s string) (time.Duration, error) {
	unit := map[byte]time.Duration{'d': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	if n := len(s); n > 1 {
		if u, ok := unit[s[n-1]]; ok {
			v, err := strconv.Atoi(s[:n-1])
			if err != nil || v <= 0 || v > 100*365 {
				return 0, errors.New("want a positive whole number of days or weeks, such as 30d")
			}
			return time.Duration(v) * u, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive duration such as 30d, 12h or 90m")
	}
	return d, nil
}
