package cli

import (
	"errors"
	"flag"
	"os"

	"github.com/nats-io/nats.go"
)

// ClientTLS is the TLS a daemon's NATS connection uses: the CA that
// verifies the server, and a client certificate for servers that ask.
type ClientTLS struct {
	CA, Cert, Key string
}

// ClientTLSFlags registers --nats-ca, --nats-cert and --nats-key on fs.
func ClientTLSFlags(fs *flag.FlagSet) *ClientTLS {
	c := &ClientTLS{}
	fs.StringVar(&c.CA, "nats-ca", "", "PEM file of the CA that signed the NATS server's certificate; verifies it (default: the system's roots, when the server offers TLS) [NATS_CA]")
	fs.StringVar(&c.Cert, "nats-cert", "", "PEM client certificate for a NATS server that asks for one (with --nats-key) [NATS_CERT]")
	fs.StringVar(&c.Key, "nats-key", "", "PEM private key of --nats-cert [NATS_KEY]")
	return c
}

// Options returns the connection options, after checking that the files
// can be read, with an error that names the flag.
func (c ClientTLS) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("a NATS client certificate needs both --nats-cert and --nats-key")
	}
	for _, f := range []struct{ flag, path string }{{"nats-ca", c.CA}, {"nats-cert", c.Cert}, {"nats-key", c.Key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			why := err
			var pe *os.PathError
			if errors.As(err, &pe) {
				why = pe.Err
			}
			return nil, Explain(err, "cannot read --%s %s: %v", f.flag, f.path, why)
		}
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}
