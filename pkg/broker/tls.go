package broker

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/ollamamax/ollamamax/internal/tlsreload"
)

// ErrNoTLS is returned by ReloadTLS on a broker started without TLS.
var ErrNoTLS = errors.New("broker: TLS is not configured")

// TLSConfig is the certificate of the embedded server's client listener.
type TLSConfig struct {
	// Cert and Key are PEM files: the server's certificate (with any
	// intermediates) and its private key. Both or neither.
	Cert, Key string
	// CA, if set, is a PEM file of the authorities whose client certificates
	// the server requires and verifies on its listener. In-process clients
	// (the dispatcher's own connection) need none.
	CA string
}

// Enabled reports whether a certificate is configured.
func (c TLSConfig) Enabled() bool { return c.Cert != "" || c.Key != "" || c.CA != "" }

// Validate reports a half-given configuration.
func (c TLSConfig) Validate() error {
	if c.Enabled() && (c.Cert == "" || c.Key == "") {
		return errors.New("broker: TLS needs both a certificate and a key file")
	}
	return nil
}

// load reads the files into a server TLS configuration.
func (c TLSConfig) load() (*tls.Config, error) {
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: c.Cert, KeyFile: c.Key, CaFile: c.CA, Verify: c.CA != "",
	})
	if err != nil {
		return nil, fmt.Errorf("broker: TLS certificate %s, key %s, CA %q: %w", c.Cert, c.Key, c.CA, err)
	}
	return tc, nil
}

// tlsReloader hands each new TLS connection the configuration last loaded:
// the server keeps the base configuration it was started with, whose
// GetConfigForClient asks here, so a reload changes the certificate (and
// client CA) for new connections and leaves established ones alone.
type tlsReloader struct {
	files TLSConfig
	cur   *tlsreload.Value[tls.Config]
}

// newTLSReloader loads the files and returns the base configuration for
// the server's options.
func newTLSReloader(files TLSConfig) (*tlsReloader, *tls.Config, error) {
	cur, err := tlsreload.New(files.load)
	if err != nil {
		return nil, nil, err
	}
	base := cur.Load().Clone()
	base.GetConfigForClient = cur.Get
	return &tlsReloader{files: files, cur: cur}, base, nil
}

func (r *tlsReloader) reload() error { return r.cur.Reload() }

// ReloadTLS reads the certificate, key and CA files again: connections
// made from then on get the new certificate, established ones and streams
// are untouched. On an error the server keeps the certificate it had. A
// process calls it on SIGHUP, after the files were replaced.
func (b *Broker) ReloadTLS() error {
	if b.tls == nil {
		return ErrNoTLS
	}
	return b.tls.reload()
}

// TLSFiles returns the TLS files the broker reads, zero without TLS.
func (b *Broker) TLSFiles() TLSConfig {
	if b.tls == nil {
		return TLSConfig{}
	}
	return b.tls.files
}
