package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"
)

// Trust is what a nats-server needs to run in operator mode: the operator
// JWT, the system account, and the account JWTs its resolver starts with.
// It holds no seed. Roles lists the scoped signing keys of the accounts and
// their templates, for nsc users and for reading.
type Trust struct {
	Operator      *jwt.OperatorClaims `json:"-"`
	OperatorJWT   string              `json:"operator"`
	SystemAccount string              `json:"system_account"`
	Accounts      []AccountJWT        `json:"accounts"`
	Roles         []RoleKey           `json:"roles"`
}

// AccountJWT is one account's current JWT.
type AccountJWT struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	JWT       string `json:"jwt"`
}

// RoleKey is a scoped signing key of an account and the permissions it
// gives the users it signs.
type RoleKey struct {
	Account    string                   `json:"account"`
	Role       string                   `json:"role"`
	SigningKey string                   `json:"signing_key"`
	Template   jwt.UserPermissionLimits `json:"template"`
}

// LoadTrust reads the JWTs of the auth directory dir: operator.jwt and
// every accounts/*.jwt. It needs no seed, so a directory holding only those
// files works: an operator and accounts made with nsc (nsc describe
// operator --raw > operator.jwt; nsc describe account NAME --raw >
// accounts/NAME.jwt). The operator must name its system account, and every
// account must be signed by the operator or one of its signing keys.
func LoadTrust(dir string) (*Trust, error) {
	b, err := os.ReadFile(filepath.Join(dir, operatorJWT))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (create one with 'ollamaq auth init')", ErrNotDir, dir, operatorJWT)
	}
	if err != nil {
		return nil, fmt.Errorf("read operator: %w", err)
	}
	t := &Trust{}
	if t.OperatorJWT, err = jwt.ParseDecoratedJWT(b); err != nil {
		return nil, fmt.Errorf("read operator: %w", err)
	}
	if t.Operator, err = jwt.DecodeOperatorClaims(t.OperatorJWT); err != nil {
		return nil, fmt.Errorf("read operator: %w", err)
	}
	if t.SystemAccount = t.Operator.SystemAccount; t.SystemAccount == "" {
		return nil, fmt.Errorf("%w: the operator in %s names no system account", ErrNotDir, dir)
	}
	files, err := filepath.Glob(filepath.Join(dir, accountsDir, "*.jwt"))
	if err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read accounts: %w", err)
		}
		s, err := jwt.ParseDecoratedJWT(b)
		if err != nil {
			return nil, fmt.Errorf("read account %s: %w", filepath.Base(f), err)
		}
		ac, err := jwt.DecodeAccountClaims(s)
		if err != nil {
			return nil, fmt.Errorf("read account %s: %w", filepath.Base(f), err)
		}
		if !t.Operator.DidSign(ac) {
			return nil, fmt.Errorf("%w: account %s in %s is not signed by its operator", ErrNotDir, ac.Name, dir)
		}
		t.Accounts = append(t.Accounts, AccountJWT{Name: ac.Name, PublicKey: ac.Subject, JWT: strings.TrimSpace(s)})
		for _, k := range ac.SigningKeys.Keys() {
			if scope, ok := ac.SigningKeys.GetScope(k); ok && scope != nil {
				if us, ok := scope.(*jwt.UserScope); ok {
					t.Roles = append(t.Roles, RoleKey{Account: ac.Name, Role: us.Role, SigningKey: k, Template: us.Template})
				}
			}
		}
	}
	if !slices.ContainsFunc(t.Accounts, func(a AccountJWT) bool { return a.PublicKey == t.SystemAccount }) {
		return nil, fmt.Errorf("%w: %s has no JWT of the system account %s", ErrNotDir, dir, t.SystemAccount)
	}
	slices.SortFunc(t.Accounts, func(a, b AccountJWT) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(t.Roles, func(a, b RoleKey) int {
		return strings.Compare(a.Account+" "+a.Role, b.Account+" "+b.Role)
	})
	return t, nil
}

// ServerConfig is the part of a nats-server.conf that makes a server trust
// the operator, with a full directory resolver in resolverDir that starts
// with the accounts. Every server of a cluster gets the same block; an
// account JWT pushed to one (ollamaq auth revoke) reaches all of them.
func (t *Trust) ServerConfig(resolverDir string) string {
	var b strings.Builder
	b.WriteString("# OllamaMax operator mode (ollamaq auth export). Every server of the cluster gets this block.\n")
	fmt.Fprintf(&b, "operator: %s\n", strconv.Quote(t.OperatorJWT))
	fmt.Fprintf(&b, "system_account: %s\n", t.SystemAccount)
	b.WriteString("resolver {\n  type: full\n")
	fmt.Fprintf(&b, "  dir: %s\n", strconv.Quote(resolverDir))
	b.WriteString("  allow_delete: false\n  interval: \"2m\"\n}\n")
	b.WriteString("# The accounts the resolver starts with; later changes arrive as pushed claims.\n")
	b.WriteString("resolver_preload {\n")
	for _, a := range t.Accounts {
		fmt.Fprintf(&b, "  # %s\n  %s: %s\n", a.Name, a.PublicKey, strconv.Quote(a.JWT))
	}
	b.WriteString("}\n")
	return b.String()
}
