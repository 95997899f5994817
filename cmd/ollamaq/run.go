package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const runSynopsis = `Usage: ollamaq run [flags] MODEL PROMPT

Queues an /api/generate job for MODEL and prints the reply as it streams in,
straight over NATS: no dispatcher is needed. While the job waits for a
worker, its place in the queue and the expected wait are shown on stderr
(replaced in place on a terminal; JSON events with --json).

Examples:
  ollamaq run llama3.2 "Why is the sky blue?"
  ollamaq run --raw qwen2.5:0.5b "Say hi" | jq .response
  ollamaq run --lane async llama3.2 "Summarise this later"
`

func cmdRun(fs *flag.FlagSet) runFunc {
	raw := fs.Bool("raw", false, "print Ollama's NDJSON lines instead of the text")
	batch := fs.Bool("batch", false, "queue as batch work, which runs only on capacity interactive work leaves free (--lane batch)")
	lane := fs.String("lane", "", "the job's lane: interactive (the default), async or batch; workers serve them in that order")
	wait := fs.Duration("wait", 2*time.Minute, "how long the job may wait for a worker")
	asJSON := fs.Bool("json", false, "show the queue position as JSON events on stderr ({\"event\":\"queued\",\"position\":N,\"eta_ms\":M})")
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 2 {
			fmt.Fprintln(e.stderr, "ollamaq run: want MODEL and PROMPT (see --help)")
			return exitUsage
		}
		name, prompt := args[0], args[1]
		class := job.Interactive
		if *batch {
			class = job.Batch
		}
		if *lane != "" {
			c, err := job.ParseClass(*lane)
			if err != nil || *batch && c != job.Batch {
				fmt.Fprintf(e.stderr, "ollamaq run: --lane %q: want interactive, async or batch (and batch with --batch)\n", *lane)
				return exitUsage
			}
			class = c
		}
		model, err := job.CanonicalModel(name)
		if err != nil {
			fmt.Fprintf(e.stderr, "ollamaq run: %v\n", err)
			return exitUsage
		}
		return e.withQueue(ctx, func(ctx context.Context, e *env, q *queue.Queue) int {
			// Credentials bind a client to its own requester token.
			requester := e.user
			if !auth.ValidName(requester) {
				requester = "q" + job.NewID()[:12]
			}
			req, err := queue.NewRequester(q.JetStream().Conn(), q, requester)
			if err != nil {
				fmt.Fprintf(e.stderr, "ollamaq: %v\n", err)
				return exitConnect
			}
			defer func() { _ = req.Close() }() // The connection closes right after.
			line := &positionLine{e: e, asJSON: *asJSON}
			req.SetOnQueued(line.report)
			defer line.done()

			body, _ := json.Marshal(map[string]string{"model": name, "prompt": prompt}) // Strings always marshal.
			st, err := req.Submit(ctx, queue.Job{ID: job.NewID(), Model: model, Class: class, Route: "/api/generate", Body: body, Wait: *wait})
			if err != nil {
				fmt.Fprintf(e.stderr, "ollamaq: %v\n", err)
				return exitConnect
			}
			defer st.Close()

			code := exitFailed
			err = st.Follow(ctx, *wait+5*time.Second, 5*time.Minute, func(rep job.Reply) bool {
				if rep.Kind == job.KindStart || rep.Kind == job.KindError {
					line.done()
				}
				switch rep.Kind {
				case job.KindData:
					if *raw {
						_, _ = e.stdout.Write(rep.Data) // A closed stdout ends the command anyway.
						return true
					}
					printText(e, rep.Data)
				case job.KindDone:
					if !*raw {
						fmt.Fprintln(e.stdout)
					}
					code = exitOK
					return false
				case job.KindError:
					fmt.Fprintf(e.stderr, "\nollamaq: %s (status %d)\n", rep.Error, rep.Status)
					return false
				}
				return true
			})
			line.done()
			switch {
			case err == nil:
			case ctx.Err() != nil:
				_ = st.Cancel() // Best effort: we are leaving either way.
				fmt.Fprintln(e.stderr, "\nollamaq: canceled")
			case errors.Is(err, queue.ErrSilent):
				_ = st.Cancel() // Best effort: we are leaving either way.
				fmt.Fprintln(e.stderr, "\nollamaq: the worker went silent for 5m; giving up")
			default:
				fmt.Fprintf(e.stderr, "ollamaq: no worker took the job within %s (is a worker with model %s running?)\n", *wait, model)
			}
			return code
		})
	}
}

// printText prints the response text of one NDJSON line of Ollama's. A
// line carrying Ollama's mid-stream {"error"} is printed to stderr.
func printText(e *env, frame []byte) {
	var chunk struct {
		Response string `json:"response"`
		Error    string `json:"error"`
	}
	if err := json.Unmarshal(job.Payload(frame), &chunk); err != nil {
		return
	}
	if chunk.Error != "" {
		fmt.Fprintf(e.stderr, "\nollamaq: %s\n", strings.TrimSpace(chunk.Error))
	}
	fmt.Fprint(e.stdout, chunk.Response)
}
