package cli

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testFlags are a command's flags as the daemons define them.
type testFlags struct {
	fs   *flag.FlagSet
	n    *int
	wait *time.Duration
	s    *string
	b    *bool
}

func newTestFlags() testFlags {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	AddConfigFlag(fs)
	return testFlags{fs: fs,
		n:    fs.Int("n", 512, "how many [T_N]"),
		wait: fs.Duration("wait", 2*time.Minute, "how long [T_WAIT]"),
		s:    fs.String("s", "x", "a string [T_S, a remark]"),
		b:    fs.Bool("b", false, "no variable"),
	}
}

func (f testFlags) String() string {
	b := "false"
	if *f.b {
		b = "true"
	}
	return strings.Join([]string{strconv.Itoa(*f.n), f.wait.String(), *f.s, b}, " ")
}

func TestParseLayers(t *testing.T) {
	sharable := func(name string) bool { return name == "n" || name == "wait" }
	tests := []struct {
		name    string
		args    []string
		file    string // written to a file that --config names, unless ""
		env     map[string]string
		shared  string
		want    string // "n wait s b"
		wantErr string
	}{
		{name: "defaults", want: "512 2m0s x false"},
		{name: "file by flag names", file: "n = 7\n# a comment\n\nwait=5s\n--s=\"quoted value\"\nb=true\n", want: "7 5s quoted value true"},
		{name: "file by variable names", file: "T_N=8\nT_WAIT='9s'\n", want: "8 9s x false"},
		{name: "command line beats file", args: []string{"--n", "1"}, file: "n=7\n", want: "1 2m0s x false"},
		{name: "file beats environment", file: "n=7\n", env: map[string]string{"T_N": "6", "T_S": "y"}, want: "7 2m0s y false"},
		{name: "environment beats shared", env: map[string]string{"T_N": "6"}, shared: "n=5\nwait=1s", want: "6 1s x false"},
		{name: "shared beats default", shared: "T_N=5", want: "5 2m0s x false"},
		{name: "file beats shared", file: "wait=3s", shared: "wait=1s", want: "512 3s x false"},
		{name: "config file named by the environment", env: map[string]string{"OLLAMAMAX_CONFIG": "FILE"}, file: "n=4", want: "4 2m0s x false"},
		{name: "a later line wins", file: "n=1\nn=2\n", want: "2 2m0s x false"},
		{name: "unknown name", file: "n=1\nqueue-wat=2s\n", wantErr: `line 2: "queue-wat" is not a setting of t (see --help)`},
		{name: "bad value names the line", file: "\nwait=soon\n", wantErr: `line 2: wait="soon": parse error`},
		{name: "not name=value", file: "n 7", wantErr: `line 1: want name=value, got "n 7"`},
		{name: "config in the file", file: "config=/etc/other", wantErr: `line 1: config cannot be set here`},
		{name: "shared may not set any flag", shared: "s=z", wantErr: `the shared settings line 1: s cannot be set here`},
		{name: "bad shared value", shared: "n=many", wantErr: `the shared settings line 1: n="many": parse error`},
		{name: "unknown shared name", shared: "nope=1", wantErr: `the shared settings line 1: "nope" is not a setting of t`},
		{name: "bad shared value under a stronger source is still refused", env: map[string]string{"T_N": "3"}, shared: "n=many", wantErr: `n="many"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFlags()
			args := tt.args
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.file != "" {
				path := filepath.Join(t.TempDir(), "t.conf")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				if env["OLLAMAMAX_CONFIG"] == "FILE" {
					env["OLLAMAMAX_CONFIG"] = path
				} else {
					args = append([]string{"--config", path}, args...)
				}
			}
			_, err := ParseLayers(f.fs, Layers{Args: args, Getenv: func(k string) string { return env[k] },
				Shared: tt.shared, SharedFrom: "the shared settings", Sharable: sharable})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestParseLayersRereadsTheFile parses twice, as a reload does: the second
// parse sees the file as it is then.
func TestParseLayersRereadsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.conf")
	parse := func(text string) (testFlags, error) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		f := newTestFlags()
		_, err := ParseLayers(f.fs, Layers{Args: []string{"--config", path, "--s", "cmd"}, Getenv: func(string) string { return "" }})
		return f, err
	}
	first, err := parse("n=1\nwait=1s\n")
	if err != nil {
		t.Fatal(err)
	}
	second, err := parse("n=2\nwait=1s\ns=file\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := second.String(), "2 1s cmd false"; got != want {
		t.Errorf("second parse %q, want %q", got, want)
	}
	if got, want := Changed(first.fs, second.fs, nil), []string{"n"}; !slices.Equal(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	if got := Changed(first.fs, second.fs, func(name string) bool { return name == "n" }); len(got) != 0 {
		t.Errorf("Changed skipping n = %v, want none", got)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f := newTestFlags()
	if _, err := ParseLayers(f.fs, Layers{Args: []string{"--config", path}}); err == nil || !strings.Contains(err.Error(), "configuration file (--config)") {
		t.Errorf("missing file: err = %v, want one naming --config", err)
	}
}

func TestEnvOf(t *testing.T) {
	f := newTestFlags()
	for name, want := range map[string]string{"n": "T_N", "s": "T_S", "b": "", "nope": "", ConfigFlag: "OLLAMAMAX_CONFIG"} {
		if got := EnvOf(f.fs, name); got != want {
			t.Errorf("EnvOf(%s) = %q, want %q", name, got, want)
		}
	}
}

// FuzzParseSettings holds ParseSettings to its form: it never panics, and
// every setting it returns has a name without '=' or surrounding spaces,
// from a line of the text.
func FuzzParseSettings(f *testing.F) {
	for _, s := range []string{"", "n=1", "# c\nn = '2'\n\nT_WAIT=\"5s\"", "=x", "a==b", "x\n=\n", "'='", "a='"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		settings, err := ParseSettings(text)
		if err != nil {
			return
		}
		lines := strings.Split(text, "\n")
		for _, s := range settings {
			if s.Name == "" || strings.Contains(s.Name, "=") || strings.TrimSpace(s.Name) != s.Name {
				t.Errorf("name %q", s.Name)
			}
			if s.Line < 1 || s.Line > len(lines) || !strings.Contains(lines[s.Line-1], s.Name) {
				t.Errorf("setting %+v is not from its line", s)
			}
		}
	})
}

// TestParseLayersLenient reads a command's file with a subcommand's few
// flags: the names it does not know are skipped, its own still parsed.
func TestParseLayersLenient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.conf")
	if err := os.WriteFile(path, []byte("slots=4\nn=7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		lenient bool
		want    string
	}{{"strict", false, `"slots" is not a setting`}, {"lenient", true, ""}} {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFlags()
			_, err := ParseLayers(f.fs, Layers{Args: []string{"--config", path}, Getenv: func(string) string { return "" }, Lenient: tt.lenient})
			switch {
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want %q", err, tt.want)
			case tt.want == "" && (err != nil || *f.n != 7):
				t.Errorf("err = %v, n = %d; want n=7 from the file", err, *f.n)
			}
		})
	}
}
