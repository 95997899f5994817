package main

import (
	"context"
	"errors"
	"flag"

	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

const healthSynopsis = `Usage: worker healthcheck [flags]

Checks the worker whose /metrics, /healthz and /readyz listen on --listen,
for a container's health check (an image without a shell or curl): exits 0
when /readyz answers 200 (NATS connected, Ollama answers, the circuit
breaker closed), or /healthz with --live, and 1 with the reason otherwise.
It reads --listen from the same variable as the worker, and from its
--config file (OLLAMAMAX_CONFIG, or give it --config too), so a container
configured by its environment needs no flags.

Examples:
  worker healthcheck                               # GET http://127.0.0.1:9464/readyz
  OLLAMAMAX_WORKER_LISTEN=0.0.0.0:9464 worker healthcheck --live

Flags (each also read from the environment variable in brackets):
`

// healthcheck is the healthcheck subcommand with its arguments.
func healthcheck(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker healthcheck", flag.ContinueOnError)
	fs.Usage = cli.Usage(fs.Output(), healthSynopsis, fs.PrintDefaults)
	listen := fs.String("listen", worker.DefaultConfig("", nil).Listen, "address of the worker's /metrics, /healthz and /readyz [OLLAMAMAX_WORKER_LISTEN]")
	h := cli.NewHealthFlags(fs)
	cli.AddConfigFlag(fs) // The worker's file, of which it reads only the flags above.
	if help, err := cli.ParseLayers(fs, cli.Layers{Args: args, Lenient: true}); help || err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("the worker serves no /readyz: its --listen (OLLAMAMAX_WORKER_LISTEN) is empty")
	}
	return h.Run(ctx, *listen, false)
}
