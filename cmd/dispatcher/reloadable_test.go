package main

import (
	"io"
	"testing"

	"github.com/ollamamax/ollamamax/internal/cli"
)

// TestReloadableFlags holds cli.DispatcherReloadable, which ollamaq config
// checks shared settings against, to the dispatcher's flags: each is a flag
// with that variable, and a value the list takes or refuses, the flag
// takes or refuses too.
func TestReloadableFlags(t *testing.T) {
	f, _, err := parse(cli.Layers{Getenv: func(string) string { return "" }, Output: io.Discard}, "dtest")
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string][]string{"duration": {"30s", "soon"}, "int": {"1048576", "lots"}, "level": {"debug", "loud"}, "string": {"x"}}
	for _, r := range cli.DispatcherReloadable {
		fl := f.fs.Lookup(r.Flag)
		if fl == nil {
			t.Errorf("%s: no such flag", r.Flag)
			continue
		}
		if got := cli.EnvOf(f.fs, r.Flag); got != r.Env {
			t.Errorf("%s: variable %q, want %q", r.Flag, got, r.Env)
		}
		for _, v := range samples[r.Kind] {
			want := r.Check(v) == nil
			g, _, err := parse(cli.Layers{Args: []string{"--" + r.Flag, v}, Getenv: func(string) string { return "" }, Output: io.Discard}, "dtest")
			if got := err == nil && g != nil; got != want {
				t.Errorf("%s=%s: the flag takes it %v (%v), the list %v", r.Flag, v, got, err, want)
			}
		}
	}
}
