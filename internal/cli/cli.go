// Package cli holds what the three commands share: logger set-up and
// flags that fall back to environment variables.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/ollamamax/ollamamax/pkg/auth"
)

// NewLogger returns a logger writing to w: coloured text when w is a terminal
// and format is "auto", JSON otherwise ("json"), or plain text ("text").
func NewLogger(w *os.File, level, format string) (*slog.Logger, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	return newLogger(w, lv, format)
}

// ParseLevel reads a --log-level: debug, info, warn or error.
func ParseLevel(level string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return lv, nil
}

// newLogger is NewLogger at level, which a *slog.LevelVar lets change later.
func newLogger(w *os.File, lv slog.Leveler, format string) (*slog.Logger, error) {
	switch format {
	case "auto":
		if isTerminal(w) {
			return slog.New(tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly})), nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, json or text", format)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// envName finds the variable a flag's usage names at its end, "[NAME]" or
// "[NAME, remark]".
var envName = regexp.MustCompile(`\[([A-Z][A-Z0-9_]*)(?:,[^\]]*)?\]$`)

// applyEnv gives every flag of fs that the command line did not set the
// value of the environment variable its usage names, if that is set. A
// value that does not parse is an error naming the variable: a typo such as
// OLLAMAMAX_MAX_QUEUED=5O must not silently become the default.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return applyEnvUnset(fs, getenv, set)
}

// applyEnvUnset is applyEnv for the flags set does not hold; it adds those
// it sets to set.
func applyEnvUnset(fs *flag.FlagSet, getenv func(string) string, set map[string]bool) error {
	var err error
	var mine []string
	fs.VisitAll(func(f *flag.Flag) {
		m := envName.FindStringSubmatch(f.Usage)
		if err != nil || set[f.Name] || m == nil {
			return
		}
		v := strings.TrimSpace(getenv(m[1]))
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("environment variable %s=%q (for --%s): %w", m[1], v, f.Name, serr)
		}
		mine = append(mine, f.Name)
	})
	for _, name := range mine {
		set[name] = true
	}
	return err
}

// Usage returns a flag.FlagSet Usage func that prints the synopsis then the flags.
func Usage(out io.Writer, synopsis string, printDefaults func()) func() {
	return func() {
		fmt.Fprint(out, synopsis)
		printDefaults()
	}
}

// ErrUsage reports bad flags or arguments; the flag package has already said
// what was wrong, so mains exit with status 2 without repeating it.
var ErrUsage = errors.New("usage")

// Parse parses args into fs, which must take no positional arguments, then
// fills each flag the arguments left unset from the environment variable its
// usage ends with ("[OLLAMAMAX_LISTEN]"), and, if fs has a --config flag,
// from the file it names first (ParseLayers). help is true when the user
// asked for --help (and got it).
func Parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	return ParseLayers(fs, Layers{Args: args})
}

// ParseLogged registers the log flags on fs (see LogFlags), parses args as
// Parse does, and returns the logger they ask for.
func ParseLogged(fs *flag.FlagSet, args []string) (log *slog.Logger, help bool, err error) {
	newLogger := LogFlags(fs)
	if help, err := Parse(fs, args); help || err != nil {
		return nil, help, err
	}
	log, err = newLogger()
	return log, false, err
}

// LogFlags registers --log-level and --log-format on fs, with defaults from
// OLLAMAMAX_LOG_LEVEL and OLLAMAMAX_LOG_FORMAT; the returned func builds the
// logger once flags are parsed.
func LogFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	o := AddLogFlags(fs)
	return func() (*slog.Logger, error) {
		log, _, err := o.Logger(os.Stderr)
		return log, err
	}
}

// LogOptions are the values of --log-level and --log-format.
type LogOptions struct{ Level, Format string }

// AddLogFlags registers --log-level and --log-format on fs, with defaults
// from OLLAMAMAX_LOG_LEVEL and OLLAMAMAX_LOG_FORMAT, and returns where
// their values go.
func AddLogFlags(fs *flag.FlagSet) *LogOptions {
	o := &LogOptions{}
	fs.StringVar(&o.Level, "log-level", "info", "debug, info, warn or error [OLLAMAMAX_LOG_LEVEL]")
	fs.StringVar(&o.Format, "log-format", "auto", "auto (colour on a terminal, else JSON), json or text [OLLAMAMAX_LOG_FORMAT]")
	return o
}

// Logger builds the logger o asks for, writing to w, and returns the
// level it logs at, which a reload may set.
func (o *LogOptions) Logger(w *os.File) (*slog.Logger, *slog.LevelVar, error) {
	lv, err := ParseLevel(o.Level)
	if err != nil {
		return nil, nil, err
	}
	v := new(slog.LevelVar)
	v.Set(lv)
	log, err := newLogger(w, v, o.Format)
	return log, v, err
}

// ListenError explains a failed listen to a person, in one line: what the
// address addr was for, why it could not be used ("address already in use"
// when another process has it), and the flag and environment variable (env
// may be empty) that choose another. The result wraps err.
func ListenError(err error, what, addr, flag, env string) error {
	why := err.Error()
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		why = sys.Err.Error() // "address already in use", without the layers repeating addr.
	}
	change := "--" + flag
	if env != "" {
		change += " or " + env
	}
	return &explained{fmt.Sprintf("cannot listen for %s on %s: %s; choose another address with %s", what, addr, why, change), err}
}

// Explain returns err told as the message made of format and args: one line
// for a person, with the flag or variable to change. The result wraps err.
func Explain(err error, format string, args ...any) error {
	return &explained{fmt.Sprintf(format, args...), err}
}

type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// Exit ends a main: status 2 for ErrUsage, 1 with the error for anything else.
func Exit(name string, err error) {
	switch {
	case err == nil:
		return
	case errors.Is(err, ErrUsage):
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}

// ReadCreds reads a NATS credentials file for a daemon, with an error that
// says in one line what is wrong and which flags to look at.
func ReadCreds(path, flags string) (*auth.Creds, error) {
	c, err := auth.ReadCreds(path)
	if err != nil {
		why := errors.Unwrap(err)
		var pe *os.PathError
		if errors.As(err, &pe) {
			why = pe.Err
		}
		return nil, Explain(err, "cannot use the NATS credentials %s: %v (see %s)", path, why, flags)
	}
	return c, nil
}
