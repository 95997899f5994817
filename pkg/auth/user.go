package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// UserOptions describe the credentials AddUser issues.
type UserOptions struct {
	Role Role
	// Expires is how long the credentials are valid; 0 is for ever. The
	// server disconnects a user whose credentials expire.
	Expires time.Duration
	// BatchOnly lets a client publish batch-class jobs only: Lanes
	// {job.Batch}.
	BatchOnly bool
	// Lanes limits a client to jobs of these lanes (job classes); empty
	// allows every lane. The server enforces it: the job subject's class
	// token comes from the credentials' class tags.
	Lanes []job.Class
	// Models limits a client to jobs for these models (Ollama names, made
	// canonical: "llama3.2" is llama3.2:latest). Permissions match whole
	// subject tokens, so a pattern such as "llama3*" cannot be expressed:
	// list the models.
	Models []string
	// CredsFile is where the credentials are written (0600); "" writes none.
	CredsFile string
}

// User is what the directory knows of credentials it issued.
type User struct {
	Name      string      `json:"name"`
	Role      Role        `json:"role"`
	Account   string      `json:"account"`
	PublicKey string      `json:"public_key"`
	IssuedAt  time.Time   `json:"issued_at"`
	ExpiresAt *time.Time  `json:"expires_at,omitempty"`
	BatchOnly bool        `json:"batch_only,omitempty"`
	Lanes     []job.Class `json:"lanes,omitempty"`  // the lanes a client may publish to; empty: every lane
	Models    []string    `json:"models,omitempty"` // canonical names
	// CredsFile is where the credentials were written; "" if they were
	// handed over otherwise (printed).
	CredsFile string `json:"creds_file,omitempty"`
	// RevokedAt is set by Users and Revoke when the account has revoked
	// these credentials; it is not stored with the user.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Status is "revoked", "expired" or "active" at time now.
func (u *User) Status(now time.Time) string {
	switch {
	case u.RevokedAt != nil:
		return "revoked"
	case u.ExpiresAt != nil && !now.Before(*u.ExpiresAt):
		return "expired"
	}
	return "active"
}

// ValidName reports whether name can name a user: a requester token and
// worker ID that the permission templates can hold safely (letters, digits,
// '-' and '_', at most 64), and not the reserved requester token batch.
func ValidName(name string) bool {
	return job.SafeName(name) && name != job.BatchRequester
}

// AddUser issues credentials to a new user called name (its requester
// token or worker ID) with o.Role, records them in the directory, writes
// them to o.CredsFile if set, and returns the user and the credentials
// (a .creds file's contents, which hold the user's seed). A name that has
// active credentials is ErrExists; revoke them first.
func (d *Dir) AddUser(name string, o UserOptions) (*User, []byte, error) {
	if !ValidName(name) {
		return nil, nil, fmt.Errorf("%w %q: want letters, digits, '-' and '_', at most 64, and not %q", ErrInvalidName, name, job.BatchRequester)
	}
	if (name == SysUser) != (o.Role == Sys) {
		return nil, nil, fmt.Errorf("%w %q: it is the system account's user", ErrInvalidName, name)
	}
	tags, models, err := userTags(o)
	if err != nil {
		return nil, nil, err
	}
	if old, err := d.User(name); err == nil {
		if old.Status(time.Now()) == "active" {
			return nil, nil, fmt.Errorf("%w: %s has active credentials (revoke them first)", ErrExists, name)
		}
	} else if !errors.Is(err, ErrNoUser) {
		return nil, nil, err
	}

	acct, signer := d.accounts[AccountName], d.signers[o.Role]
	if o.Role == Sys {
		acct = d.accounts[SystemAccountName]
		signer = acct.kp // Signed by the account itself: no template, all of SYS.
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, fmt.Errorf("create user key: %w", err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Tags.Add(tags...)
	if o.Role != Sys {
		// A scoped key's user must carry no permissions or limits of its
		// own (NewUserClaims sets limits), and names its account.
		uc.UserPermissionLimits = jwt.UserPermissionLimits{}
		uc.IssuerAccount = acct.pub
	}
	if o.Expires > 0 {
		uc.Expires = time.Now().Add(o.Expires).Unix()
	}
	token, err := uc.Encode(signer)
	if err != nil {
		return nil, nil, fmt.Errorf("sign user %s: %w", name, err)
	}
	seed, _ := kp.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return nil, nil, fmt.Errorf("format credentials of %s: %w", name, err)
	}
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, nil, fmt.Errorf("sign user %s: %w", name, err)
	}
	u := &User{Name: name, Role: o.Role, Account: acct.claims.Name, PublicKey: pub, IssuedAt: time.Unix(claims.IssuedAt, 0).UTC(),
		BatchOnly: o.BatchOnly, Lanes: lanesOf(o), Models: models, CredsFile: o.CredsFile}
	if claims.Expires > 0 {
		t := time.Unix(claims.Expires, 0).UTC()
		u.ExpiresAt = &t
	}
	if o.CredsFile != "" {
		if err := writeFile(o.CredsFile, creds); err != nil {
			return nil, nil, err
		}
	}
	b, _ := json.MarshalIndent(u, "", "  ") // A User always marshals.
	if err := writeFile(filepath.Join(d.path, usersDir, name+".json"), append(b, '\n')); err != nil {
		return nil, nil, err
	}
	return u, creds, nil
}

// userTags checks o and returns the tags of the user JWT and the canonical
// models.
func userTags(o UserOptions) ([]string, []string, error) {
	if o.Role != Sys {
		if _, err := ParseRole(string(o.Role)); err != nil {
			return nil, nil, err
		}
	}
	if o.Expires < 0 {
		return nil, nil, fmt.Errorf("%w: negative expiry %s", ErrInvalidOption, o.Expires)
	}
	tags := []string{TagRole + ":" + string(o.Role)}
	if o.Role != Client {
		if o.BatchOnly || len(o.Lanes) > 0 || len(o.Models) > 0 {
			return nil, nil, fmt.Errorf("%w: batch-only, lanes and models are for clients, not for a %s", ErrInvalidOption, o.Role)
		}
		return tags, nil, nil
	}
	if o.BatchOnly && len(o.Lanes) > 0 {
		return nil, nil, fmt.Errorf("%w: batch-only is the lanes batch: give one of them", ErrInvalidOption)
	}
	lanes := lanesOf(o)
	if len(lanes) == 0 {
		tags = append(tags, TagClass+":*")
	}
	for _, c := range lanes {
		if _, err := job.ParseClass(string(c)); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		tags = append(tags, TagClass+":"+string(c))
	}
	if len(o.Models) == 0 {
		return append(tags, TagModel+":*"), nil, nil
	}
	var models []string
	for _, m := range o.Models {
		if strings.ContainsAny(m, "*>?[") {
			return nil, nil, fmt.Errorf("%w: model %q is a pattern; permissions match whole subject tokens, so list the models instead", ErrInvalidOption, m)
		}
		c, err := job.CanonicalModel(m)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		if !slices.Contains(models, c) {
			models = append(models, c)
			tags = append(tags, TagModel+":"+job.EncodeModel(c))
		}
	}
	return tags, models, nil
}

// lanesOf returns the lanes o limits a client to, each once; none for
// every lane.
func lanesOf(o UserOptions) []job.Class {
	if o.BatchOnly {
		return []job.Class{job.Batch}
	}
	var out []job.Class
	for _, c := range o.Lanes {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// user reads the record of name, without revocation.
func (d *Dir) user(name string) (*User, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q", ErrNoUser, name)
	}
	b, err := os.ReadFile(filepath.Join(d.path, usersDir, name+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoUser, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read user %s: %w", name, err)
	}
	var u User
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, fmt.Errorf("read user %s: %w", name, err)
	}
	return &u, nil
}

// revokedAt sets u.RevokedAt from its account's revocations.
func (d *Dir) revokedAt(u *User) {
	u.RevokedAt = nil
	for _, a := range d.accounts {
		if a.claims.Name != u.Account {
			continue
		}
		if t, ok := a.claims.Revocations[u.PublicKey]; ok && t >= u.IssuedAt.Unix() {
			rt := time.Unix(t, 0).UTC()
			u.RevokedAt = &rt
		}
	}
}

// User returns the user called name: ErrNoUser if there is none.
func (d *Dir) User(name string) (*User, error) {
	u, err := d.user(name)
	if err != nil {
		return nil, err
	}
	d.revokedAt(u)
	return u, nil
}

// Users lists every user the directory issued credentials to, by name.
func (d *Dir) Users() ([]*User, error) {
	entries, err := os.ReadDir(filepath.Join(d.path, usersDir))
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var users []*User
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidName(name) {
			continue // Not a record: a temporary file, or someone else's.
		}
		u, err := d.User(name)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, nil
}

// Revoke revokes the credentials of user name: it adds them to the
// revocations of their account, re-signs and stores the account JWT, and
// returns the user and that JWT, which PushAccount sends to the servers.
// Revoking a revoked user again is not an error: it returns the same
// account JWT, to push again.
func (d *Dir) Revoke(name string) (*User, string, error) {
	u, err := d.User(name)
	if err != nil {
		return nil, "", err
	}
	acctName := AccountName
	if u.Account == SystemAccountName {
		acctName = SystemAccountName
	}
	a := d.accounts[acctName]
	if u.RevokedAt != nil {
		return u, a.jwt, nil
	}
	// Revocations count in whole seconds: this one covers every JWT of this
	// key issued until now.
	a.claims.RevokeAt(u.PublicKey, time.Now())
	s, err := d.saveAccount(acctName)
	if err != nil {
		return nil, "", err
	}
	d.revokedAt(u)
	return u, s, nil
}
