package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// HealthTimeout bounds one health check, connection and answer together.
const HealthTimeout = 5 * time.Second

// Healthcheck GETs path from the server listening on addr, a listen address
// such as 0.0.0.0:11435 (an unspecified host is probed on loopback, where
// every listener of a container or a machine answers), over HTTPS if
// useTLS. It returns the start of the answer when it is 200 OK, and an error
// naming the URL and the status or failure otherwise. The certificate is
// not verified: the check is of the process beside it, which it reaches by
// a loopback address that no certificate names (as kubelet's HTTPS probes).
func Healthcheck(ctx context.Context, addr, path string, useTLS bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	scheme := "http"
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if useTLS {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // See the doc comment.
	}
	target := scheme + "://" + net.JoinHostPort(host, port) + path
	ctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // The URL is said once, below.
		}
		return "", fmt.Errorf("GET %s: %w", target, err)
	}
	defer func() { _ = resp.Body.Close() }()              // Read in full or not needed.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // What came is all the message needs.
	text := string(bytes.TrimSpace(body))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", target, resp.Status, text)
	}
	return text, nil
}

// HealthFlags are the flags of a command's healthcheck subcommand.
type HealthFlags struct {
	live bool
}

// NewHealthFlags registers --live on fs.
func NewHealthFlags(fs *flag.FlagSet) *HealthFlags {
	h := &HealthFlags{}
	fs.BoolVar(&h.live, "live", false, "check /healthz (the process runs) instead of /readyz (it can serve)")
	return h
}

// Run checks addr as Healthcheck does, on /readyz or with --live on
// /healthz, and prints the answer on stdout when it is 200 OK.
func (h *HealthFlags) Run(ctx context.Context, addr string, useTLS bool) error {
	path := "/readyz"
	if h.live {
		path = "/healthz"
	}
	text, err := Healthcheck(ctx, addr, path, useTLS)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, text)
	return nil
}
