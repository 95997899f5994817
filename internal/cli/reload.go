package cli

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// NotifyReload passes SIGHUP on as reload requests. The channel holds at
// most one request: signals that arrive while one waits make no second
// reload, since a reload reads everything anew. stop ends it; only a main
// should call it.
func NotifyReload() (reload <-chan struct{}, stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range hup {
			select {
			case out <- struct{}{}:
			default: // A reload is pending already.
			}
		}
	}()
	return out, func() {
		signal.Stop(hup)
		close(hup) // No signal is delivered after Stop returns.
		<-done
	}
}

// Check reads the files as a (re)connect will: nats.go reads them on each
// connect, so a reload cannot change them, only tell whether the next
// reconnect can use them.
func (c ClientTLS) Check() error {
	if c.Cert != "" {
		if _, err := tls.LoadX509KeyPair(c.Cert, c.Key); err != nil {
			return fmt.Errorf("--nats-cert %s, --nats-key %s: %w", c.Cert, c.Key, err)
		}
	}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return fmt.Errorf("--nats-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("--nats-ca %s: no PEM certificate in it", c.CA)
		}
	}
	return nil
}
