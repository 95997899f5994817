package job

import (
	"errors"
	"testing"
)

func TestCanonicalModel(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"bare", "llama3.2", "llama3.2:latest"},
		{"tagged", "llama3.2:latest", "llama3.2:latest"},
		{"case", "Llama3.2:Latest", "llama3.2:latest"},
		{"full default", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"},
		{"library", "library/qwen2.5:0.5b", "qwen2.5:0.5b"},
		{"user", "user/m:tag", "user/m:tag"},
		{"hf", "hf.co/Org/Repo:Q4_K_M", "hf.co/org/repo:q4_k_m"},
		{"host port", "localhost:5000/ns/model", "localhost:5000/ns/model:latest"},
		{"spaces", "  phi3  ", "phi3:latest"},
		{"tab and newline", "\tphi3\n", "phi3:latest"},
		{"local source", "llama3.2:8b:local", "llama3.2:8b"},
		{"local source of the default tag", "Tiny:LOCAL ", "tiny:latest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalModel(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("CanonicalModel(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCanonicalModelRejects(t *testing.T) {
	for _, in := range []string{"", "a b", "x:", ":tag", "a/b/c/d", ".hidden", "m*", "m>", "a//b", "m:t.a g", ":local", "x::local"} {
		if got, err := CanonicalModel(in); !errors.Is(err, ErrInvalidModel) {
			t.Errorf("CanonicalModel(%q) = %q, %v; want ErrInvalidModel", in, got, err)
		}
	}
}

func TestEncodeModel(t *testing.T) {
	tests := []struct{ in, want string }{
		{"llama3.2:latest", "llama3_2e2_3alatest"},
		{"user/m:tag", "user_2fm_3atag"},
		{"a_b-c:latest", "a_5fb-c_3alatest"},
	}
	for _, tt := range tests {
		got := EncodeModel(tt.in)
		if got != tt.want {
			t.Errorf("EncodeModel(%q) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := DecodeModel(got)
		if err != nil || back != tt.in {
			t.Errorf("DecodeModel(%q) = %q, %v; want %q", got, back, err, tt.in)
		}
	}
}

func TestDecodeModelRejects(t *testing.T) {
	for _, in := range []string{"a_", "a_2", "a_zz", "a.b", "a*", "a b", "a_2F"} {
		if got, err := DecodeModel(in); !errors.Is(err, ErrInvalidModel) {
			t.Errorf("DecodeModel(%q) = %q, %v; want ErrInvalidModel", in, got, err)
		}
	}
}

func FuzzModelEncoding(f *testing.F) {
	for _, s := range []string{"llama3.2", "hf.co/org/repo:Q4", "a:b", "x_y.z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, err := CanonicalModel(name)
		if err != nil {
			return
		}
		again, err := CanonicalModel(c)
		if err != nil || again != c {
			t.Fatalf("canonical form %q not stable: %q, %v", c, again, err)
		}
		tok := EncodeModel(c)
		if !ValidToken(tok) {
			t.Fatalf("EncodeModel(%q) = %q is not a subject token", c, tok)
		}
		back, err := DecodeModel(tok)
		if err != nil || back != c {
			t.Fatalf("round trip %q -> %q -> %q, %v", c, tok, back, err)
		}
	})
}

func TestCheckModelKeys(t *testing.T) {
	for body, ambiguous := range map[string]bool{
		`{"model":"a","prompt":"x"}`:                false,
		`{"Model":"a"}`:                             false,
		`{"model":"a","name":"b"}`:                  false,
		`{"model":"a","Model":"b"}`:                 true,
		`{"MODEL":"a","x":{"model":"b"},"model":1}`: true,
		`{"name":"a","NAME":"b"}`:                   true,
		`{"x":{"model":"a","Model":"b"}}`:           false, // Only the top level names the model.
		`not json`:                                  false,
		`[{"model":"a"},{"model":"b"}]`:             false,
	} {
		err := CheckModelKeys([]byte(body))
		if (err != nil) != ambiguous || err != nil && !errors.Is(err, ErrAmbiguousModel) {
			t.Errorf("CheckModelKeys(%s) = %v, want ambiguous %t", body, err, ambiguous)
		}
	}
}
