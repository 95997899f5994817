package apikey

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

func TestNewSecretNamesItsKey(t *testing.T) {
	k, secret := New(Key{Name: "ci", Tenant: "acme", Role: User})
	if !strings.HasPrefix(secret, Prefix+k.ID+"_") || len(secret) != len(Prefix)+idLen+1+43 {
		t.Fatalf("secret %q for key %q: want %s<id>_<43 characters>", secret, k.ID, Prefix)
	}
	if id, err := ParseID(secret); err != nil || id != k.ID {
		t.Errorf("ParseID(secret) = %q, %v; want %q", id, err, k.ID)
	}
	if strings.Contains(k.Hash, secret) || len(k.Hash) != 64 {
		t.Errorf("hash %q: want 64 hex digits, not the secret", k.Hash)
	}
	if err := k.Check(secret, time.Now()); err != nil {
		t.Errorf("Check(its own secret) = %v", err)
	}
	k2, secret2 := New(Key{Name: "ci", Tenant: "acme", Role: User})
	if k2.ID == k.ID || secret2 == secret || k2.Hash == k.Hash {
		t.Error("two keys share an ID, secret or hash")
	}
}

func TestParseIDRejects(t *testing.T) {
	_, good := New(Key{})
	id := good[len(Prefix) : len(Prefix)+idLen]
	rest := good[len(Prefix)+idLen+1:]
	tests := []struct{ name, secret string }{
		{"empty", ""},
		{"no prefix", good[len(Prefix):]},
		{"other prefix", "sk_" + good[len(Prefix):]},
		{"short", good[:len(good)-1]},
		{"long", good + "A"},
		{"no separator", Prefix + id + "x" + rest},
		{"dot in ID", Prefix + "abc.defghijk" + "_" + rest},
		{"star in ID", Prefix + "abc*defghijk" + "_" + rest},
		{"space in ID", Prefix + "abc defghijk" + "_" + rest},
		{"underscore in ID", Prefix + "abc_defghijk" + "_" + rest},
		{"dash in ID", Prefix + "abc-defghijk" + "_" + rest},
		{"not base64", Prefix + id + "_" + strings.Repeat("!", 43)},
		{"padding", Prefix + id + "_" + rest[:42] + "="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ParseID(tt.secret); !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseID(%q) = %q, %v; want ErrMalformed", tt.secret, got, err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k, secret := New(Key{Name: "ci", Tenant: "acme", Role: User})
	rotated, newSecret := k.Rotate(now)
	expiring := k
	expiring.Expires = now.Add(time.Hour)
	revoked := k
	revoked.Revoked = now.Add(-time.Minute)
	tests := []struct {
		name   string
		key    Key
		secret string
		at     time.Time
		want   error
	}{
		{"in force", k, secret, now, nil},
		{"wrong secret", k, newSecret, now, ErrUnknown},
		{"empty secret", k, "", now, ErrUnknown},
		// The hash is what is stored: knowing it must not be enough.
		{"the hash itself", k, k.Hash, now, ErrUnknown},
		{"a record without a hash", Key{ID: k.ID}, secret, now, ErrUnknown},
		{"rotated: new secret", rotated, newSecret, now, nil},
		{"rotated: old secret", rotated, secret, now, ErrUnknown},
		{"before expiry", expiring, secret, now.Add(time.Hour - time.Nanosecond), nil},
		{"at expiry", expiring, secret, now.Add(time.Hour), ErrExpired},
		{"after expiry", expiring, secret, now.Add(2 * time.Hour), ErrExpired},
		{"revoked", revoked, secret, now, ErrRevoked},
		// A wrong secret learns nothing about the key's state.
		{"revoked, wrong secret", revoked, newSecret, now, ErrUnknown},
		{"expired, wrong secret", expiring, newSecret, now.Add(2 * time.Hour), ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.Check(tt.secret, tt.at); !errors.Is(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("Check = %v, want %v", got, tt.want)
			}
		})
	}
	if !rotated.Rotated.Equal(now) || rotated.ID != k.ID {
		t.Errorf("Rotate kept ID %q (want %q), rotated at %s (want %s)", rotated.ID, k.ID, rotated.Rotated, now)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"llama3.2:latest", "llama3.2:latest", true},
		{"llama3.2:latest", "llama3.2:1b", false},
		{"llama3*", "llama3.2:1b", true},
		{"llama3*", "llama3", true},
		{"llama3*", "llama", false},
		{"*", "anything/at:all", true},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"x", "", false},
		{"*:latest", "qwen2.5:latest", true},
		{"*:latest", "qwen2.5:0.5b", false},
		{"hf.co/*", "hf.co/org/repo:q4_k_m", true}, // * crosses '/' and ':'
		{"*/repo:*", "hf.co/org/repo:q4", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a*b*c", "acb", false},
		{"a**", "a", true},
		{"*a", "banana", true},
		{"*an*na", "banana", true},
		{"*x", "banana", false},
		{"llama3", "llama3.2", false},  // no implicit prefix match
		{"LLAMA3*", "llama3.2", false}, // patterns are stored lower-case
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestAllows(t *testing.T) {
	tests := []struct {
		name   string
		models []string
		model  string
		want   bool
	}{
		{"no patterns: every model", nil, "anything:latest", true},
		{"exact canonical", []string{"llama3.2:latest"}, "llama3.2:latest", true},
		{"short name for :latest", []string{"llama3.2"}, "llama3.2:latest", true},
		{"short name, other tag", []string{"llama3.2"}, "llama3.2:1b", false},
		{"pattern", []string{"llama3*"}, "llama3.2:1b", true},
		{"second pattern", []string{"qwen*", "llama3*"}, "llama3.1:8b", true},
		{"no pattern matches", []string{"qwen*", "phi3"}, "llama3.2:latest", false},
		{"tag pattern", []string{"*:0.5b"}, "qwen2.5:0.5b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := Key{Models: tt.models}
			if got := k.Allows(tt.model); got != tt.want {
				t.Errorf("Key{Models: %q}.Allows(%q) = %v, want %v", tt.models, tt.model, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good, _ := New(Key{Name: "ci", Tenant: "acme", Role: User, Models: []string{"llama3*"}, RPM: 60, TPM: 1000})
	tests := []struct {
		name    string
		change  func(*Key)
		wantErr string // "" for valid
	}{
		{"valid", func(*Key) {}, ""},
		{"admin", func(k *Key) { k.Role = Admin }, ""},
		{"bad ID", func(k *Key) { k.ID = "a.b" }, "is not a subject token"},
		{"no name", func(k *Key) { k.Name = "" }, "needs a name"},
		{"long name", func(k *Key) { k.Name = strings.Repeat("n", 129) }, "needs a name"},
		{"no tenant", func(k *Key) { k.Tenant = "" }, "tenant"},
		{"tenant with a dot", func(k *Key) { k.Tenant = "a.b" }, "tenant"},
		{"long tenant", func(k *Key) { k.Tenant = strings.Repeat("t", 65) }, "tenant"},
		{"bad role", func(k *Key) { k.Role = "root" }, "unknown role"},
		{"negative rpm", func(k *Key) { k.RPM = -1 }, "must not be negative"},
		{"unknown lane", func(k *Key) { k.Lane = "urgent" }, `unknown lane "urgent"`},
		{"async lane", func(k *Key) { k.Lane = job.Async }, ""},
		{"empty pattern", func(k *Key) { k.Models = []string{""} }, "model pattern"},
		{"too many patterns", func(k *Key) { k.Models = make([]string, 257) }, "at most 256"},
		{"no hash", func(k *Key) { k.Hash = "" }, "missing secret hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := good
			k.Models = append([]string(nil), good.Models...)
			tt.change(&k)
			err := k.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Role
	}{{"user", User}, {"admin", Admin}, {"", ""}, {"Admin", ""}, {"root", ""}} {
		got, err := ParseRole(tt.in)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("ParseRole(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseID feeds ParseID arbitrary bearer tokens, as HTTP clients send
// them: it must never panic, and an ID it returns is a literal subject token
// that the secret starts with.
func FuzzParseID(f *testing.F) {
	_, secret := New(Key{})
	for _, s := range []string{secret, "", Prefix, Prefix + "abcdefghijkl_", "Bearer " + secret, secret + "\n",
		Prefix + "abc.defghijk_" + secret[len(Prefix)+idLen+1:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || id != "" {
				t.Fatalf("ParseID(%q) = %q, %v; want \"\" and ErrMalformed", s, id, err)
			}
			return
		}
		if len(id) != idLen || !strings.HasPrefix(s, Prefix+id+"_") || strings.ContainsAny(id, ".*> \t\r\n_-") {
			t.Fatalf("ParseID(%q) = %q: want the %d characters after %q, one subject token", s, id, idLen, Prefix)
		}
	})
}
