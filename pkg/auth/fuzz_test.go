package auth_test

import (
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// FuzzParseCreds feeds ParseCreds arbitrary files: it must return a result
// or an error, never panic, and a name it returns unchanged.
func FuzzParseCreds(f *testing.F) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	akp, _ := nkeys.CreateAccount()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "alice"
	uc.Tags.Add("role:client")
	token, _ := uc.Encode(akp)
	seed, _ := kp.Seed()
	creds, _ := jwt.FormatUserConfig(token, seed)
	f.Add(creds)
	f.Add([]byte(token))
	f.Add([]byte("-----BEGIN NATS USER JWT-----\nxx\n------END NATS USER JWT------\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := auth.ParseCreds(b)
		if err != nil {
			return
		}
		if p := c.InboxPrefix(); p != "" && p != auth.InboxPrefix(c.Name) {
			t.Errorf("inbox prefix %q for name %q", p, c.Name)
		}
		if c.InboxPrefix() != "" && !auth.ValidName(c.Name) {
			t.Errorf("inbox prefix for invalid name %q", c.Name)
		}
	})
}

// FuzzValidName checks that every valid name is one literal subject token
// that no permission template can widen.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"alice", "gpu-7_a", "a.b", "*", ">", "batch", "", "a b", "_INBOX"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !auth.ValidName(s) {
			return
		}
		for _, c := range []byte(s) {
			if c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
				t.Fatalf("ValidName(%q) but it holds %q", s, c)
			}
		}
	})
}
