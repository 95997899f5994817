package dispatcher

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestModelNameError holds what a real Ollama 0.32.15 answered (curl,
// /api/generate) for each name: "" where it looked the model up.
func TestModelNameError(t *testing.T) {
	tests := []struct{ name, want string }{
		{"llama3.2", ""},
		{"Llama3.2:8B", ""},
		{"hf.co/Org/Repo:Q4_K_M", ""},
		{"user/model", ""},
		{"x:local", ""},
		{"x:cloud", ""},
		{"x:8b-cloud", ""},
		{"a b", "invalid model name"},
		{"x:", "invalid model name"},
		{"a/b/c/d", "invalid model name"},
		{"m*", "invalid model name"},
		{"localhost:5000/x", "invalid model name"},
		{"x:local:cloud", `use either :local or :cloud, not both: "x:local:cloud"`},
		{" x:cloud:local ", `use either :local or :cloud, not both: "x:cloud:local"`},
	}
	for _, tt := range tests {
		if got := modelNameError(tt.name); got != tt.want {
			t.Errorf("modelNameError(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// FuzzModelName feeds arbitrary names to what answers a model no worker
// has: a name is either refused with 400 or named in a 404, never a panic,
// and the message is valid UTF-8 wherever the name is.
func FuzzModelName(f *testing.F) {
	for _, s := range []string{"llama3.2", "a b", "x:local:cloud", "X:8B-CLOUD", "hf.co/Org/Repo:Q4", "İ:-cloud", ":", "", "a/b/c/d"} {
		f.Add(s)
	}
	listed := []string{"llama3.2:latest", "User/Model:Tag", "hf.co/Org/Repo:Q4_K_M"}
	f.Fuzz(func(t *testing.T, name string) {
		status, msg := showNotFound(name, listed)
		switch {
		case status == http.StatusBadRequest && msg != modelNameError(name):
			t.Fatalf("showNotFound(%q) = 400 %q, modelNameError says %q", name, msg, modelNameError(name))
		case status == http.StatusNotFound && (modelNameError(name) != "" || !strings.HasPrefix(msg, "model '")):
			t.Fatalf("showNotFound(%q) = 404 %q for a name Ollama refuses (%q)", name, msg, modelNameError(name))
		case status != http.StatusBadRequest && status != http.StatusNotFound:
			t.Fatalf("showNotFound(%q) = %d", name, status)
		}
		if utf8.ValidString(name) && !utf8.ValidString(msg) {
			t.Fatalf("showNotFound(%q) = %q: not UTF-8", name, msg)
		}
	})
}
