package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// Role is what a key may do.
type Role string

const (
	// User runs inference and reads listings, for its models only.
	User Role = "user"
	// Admin may also manage the fleet's models (pull, delete, copy) and read /metrics.
	Admin Role = "admin"
)

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case User, Admin:
		return r, nil
	}
	return "", fmt.Errorf("apikey: unknown role %q: want user or admin", s)
}

// Key is a key's record. The secret itself is shown once, when the key is
// created or rotated, and kept nowhere.
type Key struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
	Role   Role   `json:"role"`
	// Models are the patterns of the models the key may use: canonical
	// names, where * stands for any run of characters ("llama3*" allows
	// llama3.2:1b). Empty allows every model.
	Models []string `json:"models,omitempty"`
	// RPM and TPM bound requests and tokens (prompt + completion, as
	// Ollama counts them) per minute; 0 is no bound.
	RPM int `json:"rpm,omitempty"`
	TPM int `json:"tpm,omitempty"`
	// Lane is the key's default priority lane and the highest it may ask
	// for with the Ollamaq-Priority header (docs/scheduling.md): a key of
	// lane async runs async unless it asks for batch, and may not ask for
	// interactive. Empty is interactive: every lane.
	Lane job.Class `json:"lane,omitempty"`
	// Hash is the hex SHA-256 of the secret.
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated,omitzero"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
	Revoked time.Time `json:"revoked,omitzero"` // zero: in force
}

// Errors of Check and Cache.Authenticate. Each means 401.
var (
	ErrMissing   = errors.New("missing API key")
	ErrMalformed = errors.New("malformed API key")
	ErrUnknown   = errors.New("unknown API key")
	ErrExpired   = errors.New("expired API key")
	ErrRevoked   = errors.New("revoked API key")
)

// Prefix starts every secret, so that a key is recognisable in a config
// file or a leak scanner: omx_<id>_<43 characters>.
const Prefix = "omx_"

// idLen is the length of a key ID: 60 random bits, as job IDs are written.
const idLen = 12

// New returns a key record with a fresh ID and secret, and the secret.
// Validate checks the fields.
func New(k Key) (Key, string) {
	k.ID = job.NewID()[:idLen]
	secret := newSecret(k.ID)
	k.Hash = hash(secret)
	return k, secret
}

// Rotate gives k a new secret, returned; the old one stops working.
func (k Key) Rotate(now time.Time) (Key, string) {
	secret := newSecret(k.ID)
	k.Hash, k.Rotated = hash(secret), now
	return k, secret
}

func newSecret(id string) string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error (Go 1.24+).
	return Prefix + id + "_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ParseID returns the key ID a secret names, or ErrMalformed.
func ParseID(secret string) (string, error) {
	rest, ok := strings.CutPrefix(secret, Prefix)
	if !ok || len(rest) != idLen+1+43 || rest[idLen] != '_' {
		return "", ErrMalformed
	}
	id := rest[:idLen]
	if !job.ValidToken(id) || strings.ContainsAny(id, "_-") {
		return "", ErrMalformed
	}
	if _, err := base64.RawURLEncoding.DecodeString(rest[idLen+1:]); err != nil {
		return "", ErrMalformed
	}
	return id, nil
}

// Check tells whether secret is k's and k is in force at now. The hashes
// are compared in constant time.
func (k Key) Check(secret string, now time.Time) error {
	if subtle.ConstantTimeCompare([]byte(hash(secret)), []byte(k.Hash)) != 1 {
		return ErrUnknown
	}
	switch {
	case !k.Revoked.IsZero():
		return ErrRevoked
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return ErrExpired
	}
	return nil
}

// Validate reports the first invalid field of a key about to be stored.
func (k Key) Validate() error {
	switch {
	case !job.ValidToken(k.ID):
		return fmt.Errorf("apikey: ID %q is not a subject token", k.ID)
	case k.Name == "" || len(k.Name) > 128:
		return errors.New("apikey: a key needs a name of at most 128 bytes")
	case !job.SafeName(k.Tenant): // Tenants name Prometheus label values and audit entries.
		return fmt.Errorf("apikey: tenant %q: want 1 to 64 letters, digits, '-' or '_'", k.Tenant)
	case k.Role != User && k.Role != Admin:
		return fmt.Errorf("apikey: unknown role %q: want user or admin", k.Role)
	case k.RPM < 0 || k.TPM < 0:
		return errors.New("apikey: rpm and tpm must not be negative (0 is no bound)")
	case k.Lane != "" && k.Lane.Rank() == len(job.Classes):
		return fmt.Errorf("apikey: unknown lane %q: want %s, %s or %s", k.Lane, job.Interactive, job.Async, job.Batch)
	case len(k.Models) > 256:
		return errors.New("apikey: at most 256 model patterns")
	case len(k.Hash) != sha256.Size*2:
		return errors.New("apikey: missing secret hash")
	}
	for _, p := range k.Models {
		if p == "" || len(p) > 256 {
			return fmt.Errorf("apikey: model pattern %q: want 1 to 256 bytes", p)
		}
	}
	return nil
}

// Allows tells whether the key may use the canonical model.
func (k Key) Allows(canonical string) bool {
	if len(k.Models) == 0 {
		return true
	}
	short := strings.TrimSuffix(canonical, ":latest")
	for _, p := range k.Models {
		if match(p, canonical) || match(p, short) {
			return true
		}
	}
	return false
}

// match reports whether name matches pattern, where * matches any run of
// bytes (also '/' and ':', unlike path.Match) and everything else itself.
func match(pattern, name string) bool {
	star, next := -1, 0 // the last * seen in pattern, and where in name it resumes
	p, n := 0, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, next = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			next++
			p, n = star+1, next
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
