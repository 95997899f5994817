package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Where the daemons' settings come from (docs/operations.md, "Reloading
// configuration"), from the strongest:
//
//  1. the command line;
//  2. the configuration file that --config names (OLLAMAMAX_CONFIG), read
//     at start and again on every reload;
//  3. the environment: the variable each flag's usage names at its end;
//  4. the fleet's shared settings: an entry of the ollamaq_config bucket
//     that every dispatcher (or every worker) watches;
//  5. the flag's default.
//
// Each source sets only the flags a stronger one left unset. The file is
// stronger than the environment because it is what a reload can change: a
// running process's environment cannot, and a value it set would hide the
// file's forever. The shared settings are the weakest: they are the fleet's
// defaults, which any process may set otherwise for itself.

// ConfigFlag is the name of the flag that names the configuration file.
const ConfigFlag = "config"

// AddConfigFlag registers --config on fs; ParseLayers reads the file it names.
func AddConfigFlag(fs *flag.FlagSet) {
	fs.String(ConfigFlag, "", "file of name=value lines, one setting a line (a flag's name or its variable, # for comments), between the command line and the environment in precedence; read again on SIGHUP [OLLAMAMAX_CONFIG]")
}

// Layers are the sources ParseLayers reads besides the flags' defaults.
type Layers struct {
	// Args are the command-line arguments.
	Args []string
	// Getenv reads the environment; nil is os.Getenv.
	Getenv func(string) string
	// Shared is the text of the shared settings, in the configuration
	// file's format; SharedFrom names it in errors. Only the flags Sharable
	// reports true for may be set there (nil: none).
	Shared     string
	SharedFrom string
	Sharable   func(name string) bool
	// Output, if set, is where the flag package reports bad arguments and
	// prints the help.
	Output io.Writer
	// Lenient skips the names of the configuration file that are no flag
	// of fs, for a subcommand that reads a few of its command's settings
	// from the command's file (healthcheck reads --listen).
	Lenient bool
}

// ParseLayers parses l.Args into fs, which must take no positional
// arguments, then sets each flag the arguments left unset from the
// configuration file (if fs has a --config flag and it names one), then
// from the environment, then from l.Shared, the strongest source first. A
// value that does not parse, or a name in the file or the shared settings
// that is no flag of fs, is an error that says where it was. help is true
// when the arguments asked for --help (and got it).
func ParseLayers(fs *flag.FlagSet, l Layers) (help bool, err error) {
	if l.Output != nil {
		fs.SetOutput(l.Output)
	}
	if err := fs.Parse(l.Args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q (see --help)\n", fs.Arg(0))
		return false, ErrUsage
	}
	getenv := l.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cf := fs.Lookup(ConfigFlag); cf != nil {
		if !set[ConfigFlag] {
			if v := strings.TrimSpace(getenv("OLLAMAMAX_CONFIG")); v != "" {
				if err := fs.Set(ConfigFlag, v); err != nil {
					return false, err
				}
			}
		}
		set[ConfigFlag] = true
		if path := cf.Value.String(); path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return false, fmt.Errorf("configuration file (--%s): %w", ConfigFlag, err)
			}
			if err := applySettings(fs, string(b), path, set, func(name string) bool { return name != ConfigFlag }, l.Lenient); err != nil {
				return false, err
			}
		}
	}
	if err := applyEnvUnset(fs, getenv, set); err != nil {
		return false, err
	}
	if l.Shared != "" {
		sharable := l.Sharable
		if sharable == nil {
			sharable = func(string) bool { return false }
		}
		if err := applySettings(fs, l.Shared, l.SharedFrom, set, sharable, false); err != nil {
			return false, err
		}
	}
	return false, nil
}

// Setting is one name=value line of a configuration file.
type Setting struct {
	Line        int // from 1
	Name, Value string
}

// ParseSettings reads text as a configuration file: one name=value a line,
// with blank lines and lines starting with # skipped, spaces around the
// name and the value dropped, and one pair of double or single quotes
// around the value removed (as systemd's EnvironmentFile does, so that one
// file can serve both). It checks only the form, not the names.
func ParseSettings(text string) ([]Setting, error) {
	var out []Setting
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want name=value, got %q", i+1, line)
		}
		if n := len(value); n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n-1] == value[0] {
			value = value[1 : n-1]
		}
		out = append(out, Setting{Line: i + 1, Name: name, Value: value})
	}
	return out, nil
}

// applySettings sets the flags text names that set does not hold, and adds
// them to set once the whole text applied; allowed says which flags text
// may name, and lenient skips names that are no flag. from names text in
// errors.
func applySettings(fs *flag.FlagSet, text, from string, set map[string]bool, allowed func(string) bool, lenient bool) error {
	settings, err := ParseSettings(text)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	mine := map[string]bool{}
	for _, s := range settings {
		f := lookupSetting(fs, s.Name)
		switch {
		case f == nil && lenient:
			continue
		case f == nil:
			return fmt.Errorf("%s line %d: %q is not a setting of %s (see --help)", from, s.Line, s.Name, fs.Name())
		case !allowed(f.Name):
			return fmt.Errorf("%s line %d: %s cannot be set here", from, s.Line, f.Name)
		case set[f.Name]:
			// A stronger source set it; the value must still be good, or
			// the one process that hides it would take a file or shared
			// settings that all the others refuse.
			if err := check(f, s.Value); err != nil {
				return fmt.Errorf("%s line %d: %s=%q: %w", from, s.Line, f.Name, s.Value, err)
			}
			continue
		}
		if err := fs.Set(f.Name, s.Value); err != nil {
			return fmt.Errorf("%s line %d: %s=%q: %w", from, s.Line, f.Name, s.Value, err)
		}
		mine[f.Name] = true
	}
	for name := range mine {
		set[name] = true
	}
	return nil
}

// check reports whether value parses as f's, leaving f as it was. It can
// only tell for the flag package's own types (a flag.Getter, whose String
// form parses back); a flag.Func it takes as it is.
func check(f *flag.Flag, value string) error {
	if _, ok := f.Value.(flag.Getter); !ok {
		return nil
	}
	old := f.Value.String()
	err := f.Value.Set(value)
	if rerr := f.Value.Set(old); rerr != nil {
		return fmt.Errorf("restore %s=%q: %w", f.Name, old, rerr) // A flag type whose String does not parse back: a programming error.
	}
	return err
}

// lookupSetting finds the flag of fs that name is: its name, with or
// without leading dashes, or the environment variable its usage names.
func lookupSetting(fs *flag.FlagSet, name string) *flag.Flag {
	if f := fs.Lookup(strings.TrimLeft(name, "-")); f != nil {
		return f
	}
	var found *flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if m := envName.FindStringSubmatch(f.Usage); m != nil && m[1] == name {
			found = f
		}
	})
	return found
}

// EnvOf returns the environment variable flag name of fs reads, or "".
func EnvOf(fs *flag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return ""
	}
	if m := envName.FindStringSubmatch(f.Usage); m != nil {
		return m[1]
	}
	return ""
}

// Changed returns, in fs order, the names of the flags of a whose values
// differ in b, two parses of one command's flags, except those skip
// reports true for. It compares the values' String forms, so flags
// defined with flag.Func, which have none, never differ.
func Changed(a, b *flag.FlagSet, skip func(name string) bool) []string {
	var out []string
	a.VisitAll(func(f *flag.Flag) {
		if skip != nil && skip(f.Name) {
			return
		}
		if g := b.Lookup(f.Name); g != nil && g.Value.String() != f.Value.String() {
			out = append(out, f.Name)
		}
	})
	return out
}
