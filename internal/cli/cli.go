// Package cli holds what the three commands share: logger set-up and
// environment-variable defaults for flags.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lmittmann/tint"
)

// NewLogger returns a logger writing to w: coloured text when w is a terminal
// and format is "auto", JSON otherwise ("json"), or plain text ("text").
func NewLogger(w *os.File, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
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

// Env returns the environment variable name, or def when it is unset or empty.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// EnvInt is Env for integers; an unset or malformed value gives def.
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name))); err == nil {
		return v
	}
	return def
}

// EnvDuration is Env for durations such as "30s".
func EnvDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(strings.TrimSpace(os.Getenv(name))); err == nil {
		return v
	}
	return def
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

// Parse parses args into fs, which must take no positional arguments. help is
// true when the user asked for --help (and got it).
func Parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q (see --help)\n", fs.Arg(0))
		return false, ErrUsage
	}
	return false, nil
}

// LogFlags registers --log-level and --log-format on fs, with defaults from
// OLLAMAMAX_LOG_LEVEL and OLLAMAMAX_LOG_FORMAT; the returned func builds the
// logger once flags are parsed.
func LogFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	level := fs.String("log-level", Env("OLLAMAMAX_LOG_LEVEL", "info"), "debug, info, warn or error [OLLAMAMAX_LOG_LEVEL]")
	format := fs.String("log-format", Env("OLLAMAMAX_LOG_FORMAT", "auto"), "auto (colour on a terminal, else JSON), json or text [OLLAMAMAX_LOG_FORMAT]")
	return func() (*slog.Logger, error) { return NewLogger(os.Stderr, *level, *format) }
}

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
