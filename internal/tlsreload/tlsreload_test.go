package tlsreload_test

import (
	"crypto/x509"
	"os"
	"testing"

	"github.com/ollamamax/ollamamax/internal/testcert"
	"github.com/ollamamax/ollamamax/internal/tlsreload"
)

// TestKeyPairReload rotates a certificate's files: Reload makes new
// handshakes get the new one; files that do not load leave the old one in
// place and are reported.
func TestKeyPairReload(t *testing.T) {
	ca := testcert.NewCA(t, "http")
	dir := t.TempDir()
	first := ca.Server(dir)
	v, err := tlsreload.New(tlsreload.KeyPair(first.Cert, first.Key))
	if err != nil {
		t.Fatal(err)
	}
	// serial is that of the certificate a new handshake gets.
	serial := func() string {
		t.Helper()
		c, err := v.Get(nil)
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.SerialNumber.String()
	}
	if got, want := serial(), first.Serial.String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}

	second := ca.Server(dir) // The same file names, replaced.
	if err := v.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got, want := serial(), second.Serial.String(); got != want {
		t.Errorf("after Reload: serial %s, want %s", got, want)
	}

	if err := os.WriteFile(second.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil {
		t.Error("Reload of a broken key file: nil error, want one")
	}
	if got, want := serial(), second.Serial.String(); got != want {
		t.Errorf("after a failed Reload: serial %s, want the one before, %s", got, want)
	}
	if v.Load() == nil {
		t.Error("Load returned nil after a failed Reload")
	}
}

// TestNewFails checks that New returns the first read's error and no Value.
func TestNewFails(t *testing.T) {
	dir := t.TempDir()
	v, err := tlsreload.New(tlsreload.KeyPair(dir+"/missing.pem", dir+"/missing-key.pem"))
	if err == nil || v != nil {
		t.Errorf("New with missing files = %v, %v; want nil and an error", v, err)
	}
}
