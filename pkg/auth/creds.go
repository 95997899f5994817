package auth

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// Creds is what a credentials file says about its user. It holds no seed.
type Creds struct {
	Path string
	Name string
	// Role is the role auth add gave the user (its role tag); "" for
	// credentials made otherwise.
	Role Role
	// Scoped is true when a scoped signing key signed the user, so that its
	// permissions are the key's template: the OllamaMax templates let every
	// role subscribe only to its own inbox prefix, InboxPrefix(Name).
	Scoped    bool
	ExpiresAt *time.Time
}

// ReadCreds reads the user JWT of the credentials file path.
func ReadCreds(path string) (*Creds, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	c, err := ParseCreds(b)
	if err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// ParseCreds reads the user JWT of a credentials file's contents.
func ParseCreds(b []byte) (*Creds, error) {
	s, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, err
	}
	uc, err := jwt.DecodeUserClaims(s)
	if err != nil {
		return nil, err
	}
	c := &Creds{Name: uc.Name, Scoped: uc.IssuerAccount != ""}
	for _, t := range uc.Tags {
		if v, ok := strings.CutPrefix(t, TagRole+":"); ok {
			c.Role = Role(v)
		}
	}
	if uc.Expires > 0 {
		t := time.Unix(uc.Expires, 0).UTC()
		c.ExpiresAt = &t
	}
	return c, nil
}

// Options are the nats options to connect with these credentials: the
// file, and for a scoped user with a valid name, its own inbox prefix.
func (c *Creds) Options() []nats.Option {
	opts := []nats.Option{nats.UserCredentials(c.Path)}
	if p := c.InboxPrefix(); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts
}

// InboxPrefix is the inbox prefix these credentials must use, or "" when
// they are not bound to one (not scoped, or a name no template holds).
func (c *Creds) InboxPrefix() string {
	if !c.Scoped || !ValidName(c.Name) {
		return ""
	}
	return InboxPrefix(c.Name)
}
