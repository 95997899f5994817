package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Errors of the auth directory; match them with errors.Is.
var (
	// ErrNotDir is returned by Open for a directory auth init did not make.
	ErrNotDir = errors.New("auth: not an auth directory")
	// ErrExists is returned by Init for a directory that already holds an
	// operator, and by AddUser for a name that has active credentials.
	ErrExists = errors.New("auth: already exists")
	// ErrNoUser is returned for a name the directory has issued nothing to.
	ErrNoUser = errors.New("auth: no such user")
	// ErrInvalidName is returned for a user name that is not a requester
	// token: letters, digits, '-' and '_', at most 64, not a reserved one.
	ErrInvalidName = errors.New("auth: invalid user name")
	// ErrInvalidRole is returned for a role that does not exist.
	ErrInvalidRole = errors.New("auth: invalid role")
	// ErrInvalidOption is returned for a user option that does not fit the
	// role or cannot be expressed as a permission (a model name pattern).
	ErrInvalidOption = errors.New("auth: invalid option")
)

// The accounts auth init creates.
const (
	// AccountName is the account OllamaMax runs in, with JetStream.
	AccountName = "OLLAMAMAX"
	// SystemAccountName is the system account, for pushing account JWTs.
	SystemAccountName = "SYS"
	// DispatcherUser is the user auth init issues for the dispatcher that
	// embeds the server (dispatcher --auth-dir).
	DispatcherUser = "dispatcher"
	// SysUser is the system account's user auth init issues.
	SysUser = "sys"
)

// Files and directories of an auth directory.
const (
	operatorJWT = "operator.jwt"
	operatorKey = "operator.nk"
	accountsDir = "accounts" // NAME.jwt, NAME.nk
	keysDir     = "keys"     // ROLE.nk: the scoped signing keys
	usersDir    = "users"    // NAME.json: what was issued
	credsDir    = "creds"    // NAME.creds, unless written elsewhere
)

// Dir is an auth directory opened for changes: it holds the operator's and
// the accounts' keys.
type Dir struct {
	path     string
	operator nkeys.KeyPair
	accounts map[string]*account // by name
	signers  map[Role]nkeys.KeyPair
}

type account struct {
	kp     nkeys.KeyPair
	pub    string
	claims *jwt.AccountClaims
	jwt    string // claims, as last signed
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// CredsPath is where the credentials of user name are written unless told
// otherwise.
func (d *Dir) CredsPath(name string) string { return CredsPath(d.path, name) }

// CredsPath is where the auth directory dir keeps the credentials of user
// name: dispatcher --auth-dir finds its own there.
func CredsPath(dir, name string) string { return filepath.Join(dir, credsDir, name+".creds") }

// Init creates the auth directory path (0700) with a new operator, the
// system account, the account OLLAMAMAX with one scoped signing key per
// role, and two users: DispatcherUser (role dispatcher) and SysUser. It
// fails with ErrExists if path already holds an operator.
func Init(path string) (*Dir, error) {
	if _, err := os.Stat(filepath.Join(path, operatorJWT)); err == nil {
		return nil, fmt.Errorf("%w: %s holds an operator already", ErrExists, path)
	}
	for _, sub := range []string{accountsDir, keysDir, usersDir, credsDir} {
		if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create auth directory: %w", err)
		}
	}
	if err := os.Chmod(path, 0o700); err != nil { // MkdirAll leaves an existing directory as it was.
		return nil, fmt.Errorf("create auth directory: %w", err)
	}
	d := &Dir{path: path, accounts: map[string]*account{}, signers: map[Role]nkeys.KeyPair{}}
	var err error
	if d.operator, err = nkeys.CreateOperator(); err != nil {
		return nil, fmt.Errorf("create operator key: %w", err)
	}
	sys, err := newAccount(SystemAccountName)
	if err != nil {
		return nil, err
	}
	app, err := newAccount(AccountName)
	if err != nil {
		return nil, err
	}
	// JetStream is on for an account only with storage limits other than 0.
	app.claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	for _, r := range Roles {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return nil, fmt.Errorf("create signing key: %w", err)
		}
		pub, _ := kp.PublicKey() // A key pair made here always has one.
		scope := jwt.NewUserScope()
		scope.Key, scope.Role = pub, string(r)
		scope.Description = "OllamaMax role " + string(r) + " (docs/security.md)"
		if scope.Template, err = Template(r); err != nil {
			return nil, err
		}
		app.claims.SigningKeys.AddScopedSigner(scope)
		d.signers[r] = kp
	}
	d.accounts[SystemAccountName], d.accounts[AccountName] = sys, app

	opPub, _ := d.operator.PublicKey()
	op := jwt.NewOperatorClaims(opPub)
	op.Name = "OllamaMax"
	op.SystemAccount = sys.pub
	opJWT, err := op.Encode(d.operator)
	if err != nil {
		return nil, fmt.Errorf("sign operator: %w", err)
	}
	if err := writeSeed(filepath.Join(path, operatorKey), d.operator); err != nil {
		return nil, err
	}
	for _, r := range Roles {
		if err := writeSeed(filepath.Join(path, keysDir, string(r)+".nk"), d.signers[r]); err != nil {
			return nil, err
		}
	}
	for name, a := range d.accounts {
		if err := writeSeed(filepath.Join(path, accountsDir, name+".nk"), a.kp); err != nil {
			return nil, err
		}
		if _, err := d.saveAccount(name); err != nil {
			return nil, err
		}
	}
	// The operator JWT last: its presence is what makes this an auth directory.
	if err := writeFile(filepath.Join(path, operatorJWT), []byte(opJWT)); err != nil {
		return nil, err
	}
	if _, _, err := d.AddUser(DispatcherUser, UserOptions{Role: Dispatcher, CredsFile: d.CredsPath(DispatcherUser)}); err != nil {
		return nil, err
	}
	if _, _, err := d.AddUser(SysUser, UserOptions{Role: Sys, CredsFile: d.CredsPath(SysUser)}); err != nil {
		return nil, err
	}
	return d, nil
}

func newAccount(name string) (*account, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("create account key: %w", err)
	}
	pub, _ := kp.PublicKey()
	c := jwt.NewAccountClaims(pub)
	c.Name = name
	return &account{kp: kp, pub: pub, claims: c}, nil
}

// Open opens the auth directory path that Init made.
func Open(path string) (*Dir, error) {
	d := &Dir{path: path, accounts: map[string]*account{}, signers: map[Role]nkeys.KeyPair{}}
	var err error
	if _, err := os.Stat(filepath.Join(path, operatorJWT)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (create one with 'ollamaq auth init')", ErrNotDir, path, operatorJWT)
	}
	if d.operator, err = readSeed(filepath.Join(path, operatorKey)); err != nil {
		return nil, err
	}
	for _, name := range []string{SystemAccountName, AccountName} {
		a := &account{}
		if a.kp, err = readSeed(filepath.Join(path, accountsDir, name+".nk")); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(filepath.Join(path, accountsDir, name+".jwt"))
		if err != nil {
			return nil, fmt.Errorf("open auth directory: %w", err)
		}
		a.jwt = strings.TrimSpace(string(b))
		if a.claims, err = jwt.DecodeAccountClaims(a.jwt); err != nil {
			return nil, fmt.Errorf("open auth directory: account %s: %w", name, err)
		}
		a.pub = a.claims.Subject
		d.accounts[name] = a
	}
	for _, r := range Roles {
		if d.signers[r], err = readSeed(filepath.Join(path, keysDir, string(r)+".nk")); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// saveAccount signs account name's claims with the operator key, writes
// the JWT and returns it.
func (d *Dir) saveAccount(name string) (string, error) {
	a := d.accounts[name]
	s, err := a.claims.Encode(d.operator)
	if err != nil {
		return "", fmt.Errorf("sign account %s: %w", name, err)
	}
	if err := writeFile(filepath.Join(d.path, accountsDir, name+".jwt"), []byte(s)); err != nil {
		return "", err
	}
	a.jwt = s
	return s, nil
}

func writeSeed(path string, kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return writeFile(path, seed)
}

func readSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open auth directory: %w", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("open auth directory: %s: %w", filepath.Base(path), err)
	}
	return kp, nil
}

// writeFile writes b to path with mode 0600, replacing it whole: a reader
// never sees half a file, and a crash leaves the old one.
func writeFile(path string, b []byte) error {
	if err := writeAtomic(path, b); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // Gone already once renamed.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Upgrade brings the role templates of the OLLAMAMAX account up to what
// this version of OllamaMax needs (Template): a directory made by an older
// version lacks the permissions of newer subjects (audit records, API keys,
// rate-limit charges). It re-signs the account only when a template
// differs, and returns the new account JWT then ("" when nothing changed):
// servers reading the directory take it at their next start, running ones
// when it is pushed (PushAccount). Users keep their credentials.
func (d *Dir) Upgrade() (string, error) {
	a := d.accounts[AccountName]
	changed := false
	for _, k := range a.claims.SigningKeys.Keys() {
		scope, ok := a.claims.SigningKeys.GetScope(k)
		us, isUser := scope.(*jwt.UserScope)
		if !ok || !isUser {
			continue
		}
		want, err := Template(Role(us.Role))
		if err != nil {
			continue // A role this version does not know: leave it alone.
		}
		if reflect.DeepEqual(us.Template, want) {
			continue
		}
		us.Template = want
		a.claims.SigningKeys.AddScopedSigner(us)
		changed = true
	}
	if !changed {
		return "", nil
	}
	return d.saveAccount(AccountName)
}
