// Package tlsreload keeps what a server reads from its TLS files, and reads
// them again on request (SIGHUP) without touching connections already made.
// The embedded NATS server keeps a whole tls.Config in one, the dispatcher's
// HTTPS listener a tls.Certificate.
//
// It imports the standard library only.
package tlsreload

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// Value is the last *T that its read func returned. It is safe for
// concurrent use: TLS handshakes call Get while a reload runs.
type Value[T any] struct {
	read func() (*T, error)
	cur  atomic.Pointer[T]
}

// New calls read once and returns a Value holding the result, or read's error.
func New[T any](read func() (*T, error)) (*Value[T], error) {
	x, err := read()
	if err != nil {
		return nil, err
	}
	v := &Value[T]{read: read}
	v.cur.Store(x)
	return v, nil
}

// Load returns the value last read.
func (v *Value[T]) Load() *T { return v.cur.Load() }

// Get returns the value last read, for tls.Config's GetCertificate (a
// Value[tls.Certificate]) or GetConfigForClient (a Value[tls.Config]):
// each new handshake gets what the last successful read returned.
func (v *Value[T]) Get(*tls.ClientHelloInfo) (*T, error) { return v.cur.Load(), nil }

// Reload calls read again and keeps its result. On an error it keeps the
// value it had and returns the error: a half-written or mismatched file
// never takes a working certificate away.
func (v *Value[T]) Reload() error {
	x, err := v.read()
	if err != nil {
		return err
	}
	v.cur.Store(x)
	return nil
}

// Store makes x the value, as a successful Reload would: for a caller that
// read new files itself (other paths, or as one step of a larger reload).
func (v *Value[T]) Store(x *T) { v.cur.Store(x) }

// KeyPair returns a read func for New that loads a PEM certificate (with
// any intermediates after it) and its private key.
func KeyPair(certFile, keyFile string) func() (*tls.Certificate, error) {
	return func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s, key %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}
}
