package main

import (
	"context"
	"flag"

	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

const healthSynopsis = `Usage: dispatcher healthcheck [flags]

Checks the dispatcher listening on --listen, for a container's health check
(an image without a shell or curl): exits 0 when /readyz answers 200 (NATS
connected, the job stream answers), or /healthz with --live, and 1 with the
reason otherwise. It reads --listen and --tls-cert from the same variables
as the dispatcher, and from its --config file (OLLAMAMAX_CONFIG, or give
it --config too), so a container configured by its environment needs no
flags; with --tls-cert set it uses HTTPS (the certificate is not checked).

Examples:
  dispatcher healthcheck                           # GET http://127.0.0.1:11435/readyz
  OLLAMAMAX_LISTEN=0.0.0.0:8080 dispatcher healthcheck --live

Flags (each also read from the environment variable in brackets):
`

// healthcheck is the healthcheck subcommand with its arguments.
func healthcheck(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dispatcher healthcheck", flag.ContinueOnError)
	fs.Usage = cli.Usage(fs.Output(), healthSynopsis, fs.PrintDefaults)
	listen := fs.String("listen", dispatcher.DefaultConfig("").HTTPAddr, "HTTP address of the dispatcher's API [OLLAMAMAX_LISTEN]")
	cert := fs.String("tls-cert", "", "the API's certificate: when set, the check uses HTTPS [OLLAMAMAX_TLS_CERT]")
	h := cli.NewHealthFlags(fs)
	cli.AddConfigFlag(fs) // The dispatcher's file, of which it reads only the flags above.
	if help, err := cli.ParseLayers(fs, cli.Layers{Args: args, Lenient: true}); help || err != nil {
		return err
	}
	return h.Run(ctx, *listen, *cert != "")
}
