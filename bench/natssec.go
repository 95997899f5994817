package main

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// benchAdmin is the user the driver connects to a secure dispatcher as.
const benchAdmin = "benchadmin"

// natsSecurity is the auth directory and TLS files of a dispatcher whose
// embedded NATS server runs in operator mode behind TLS.
type natsSecurity struct {
	dir       *auth.Dir
	ca        string // PEM of the CA that signed cert
	cert, key string // the server's certificate and key
}

// newNATSSecurity makes a fresh auth directory (pkg/auth, as `ollamaq auth
// init` does) and a test CA with a server certificate for 127.0.0.1 in the
// lab directory dir.
func newNATSSecurity(dir string) (*natsSecurity, error) {
	a, err := auth.Init(dir + "/auth")
	if err != nil {
		return nil, fmt.Errorf("auth init: %w", err)
	}
	certs := dir + "/tls"
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return nil, err
	}
	ca, pair, err := issueCerts(certs)
	if err != nil {
		return nil, err
	}
	return &natsSecurity{dir: a, ca: ca, cert: pair.Cert, key: pair.Key}, nil
}

// certTB lets internal/testcert, written for tests, run in the driver: its
// temporary directory is dir, and a Fatal panics with certFailure, which
// issueCerts recovers. Other testing.TB methods are not called.
type certTB struct {
	testing.TB
	dir string
}

type certFailure struct{ msg string }

func (certTB) Helper()                      {}
func (c certTB) TempDir() string            { return c.dir }
func (certTB) Fatal(args ...any)            { panic(certFailure{fmt.Sprint(args...)}) }
func (certTB) Fatalf(f string, args ...any) { panic(certFailure{fmt.Sprintf(f, args...)}) }

// issueCerts writes a CA and a server certificate into dir.
func issueCerts(dir string) (caFile string, pair testcert.Pair, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(certFailure)
			if !ok {
				panic(r)
			}
			err = errors.New("test certificates: " + f.msg)
		}
	}()
	ca := testcert.NewCA(certTB{dir: dir}, "ollamamax-bench")
	return ca.File, ca.Server(dir), nil
}

// issue gives user name credentials of role r (once) and returns their file.
func (s *natsSecurity) issue(name string, r auth.Role) (string, error) {
	path := s.dir.CredsPath(name)
	if _, err := s.dir.User(name); err == nil {
		return path, nil
	}
	if _, _, err := s.dir.AddUser(name, auth.UserOptions{Role: r, CredsFile: path}); err != nil {
		return "", fmt.Errorf("auth add %s --role %s: %w", name, r, err)
	}
	return path, nil
}

// options are the nats options of user name of role r: its credentials
// and inbox prefix, and the CA that verifies the server.
func (s *natsSecurity) options(name string, r auth.Role) ([]nats.Option, error) {
	path, err := s.issue(name, r)
	if err != nil {
		return nil, err
	}
	c, err := auth.ReadCreds(path)
	if err != nil {
		return nil, err
	}
	return append(c.Options(), nats.RootCAs(s.ca)), nil
}

// workerFlags are the flags of worker id on a secure dispatcher.
func (s *natsSecurity) workerFlags(id string) ([]string, error) {
	path, err := s.issue(id, auth.Worker)
	if err != nil {
		return nil, err
	}
	return []string{"--nats-creds", path, "--nats-ca", s.ca}, nil
}
