package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// clock is the fixed time the tests' commands read.
var clock = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// cli runs ollamaq commands in-process against one NATS server.
type cli struct {
	t      *testing.T
	server string
	vars   map[string]string // the environment the commands see
	now    func() time.Time
	every  time.Duration
	// terminal makes the commands draw progress bars, as on a terminal.
	terminal bool
}

func newCLI(t *testing.T, server string) *cli {
	t.Helper()
	// A home of its own: the machine's nats contexts must not leak in.
	return &cli{t: t, server: server, vars: map[string]string{"HOME": t.TempDir()},
		now: func() time.Time { return clock }, every: time.Hour}
}

// run runs one command line with --server and returns its exit code,
// stdout and stderr.
func (c *cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	return c.runIn(c.t.Context(), "", append([]string{"--server", c.server}, args...)...)
}

// runIn runs a command line as it is, with stdin and ctx.
func (c *cli) runIn(ctx context.Context, stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, stdin: strings.NewReader(stdin), getenv: func(k string) string { return c.vars[k] },
		now: c.now, every: c.every, terminal: c.terminal}
	code := e.run(ctx, args)
	return code, out.String(), errb.String()
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// scrub replaces the values of JSON fields that hold times the server chose.
func scrub(s string, fields ...string) string {
	for _, f := range fields {
		s = regexp.MustCompile(`"`+f+`": "[^"]*"`).ReplaceAllString(s, `"`+f+`": "<time>"`)
	}
	return s
}

func TestUsage(t *testing.T) {
	c := newCLI(t, "nats://127.0.0.1:1")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{name: "no command", wantCode: exitUsage, wantErr: "Usage: ollamaq"},
		{name: "help", args: []string{"help"}, wantCode: exitOK, wantOut: "Exit status: 0 ok"},
		{name: "help for a command", args: []string{"help", "batch", "results"}, wantCode: exitOK, wantOut: "OpenAI Batch API output"},
		{name: "command help", args: []string{"queues", "--help"}, wantCode: exitOK, wantErr: "oldest waiting job"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantErr: `unknown command "frobnicate"`},
		{name: "unknown batch command", args: []string{"batch", "explode"}, wantCode: exitUsage, wantErr: `unknown command "explode"`},
		{name: "unknown dlq command", args: []string{"dlq", "bury"}, wantCode: exitUsage, wantErr: `ollamaq dlq: unknown command "bury"`},
		{name: "help for an unknown command", args: []string{"help", "batch", "explode"}, wantCode: exitUsage,
			wantOut: `ollamaq batch: unknown command "explode"`},
		{name: "group without a command", args: []string{"dlq"}, wantCode: exitUsage, wantErr: "'ollamaq dlq COMMAND --help'"},
		{name: "arguments to a command that takes none", args: []string{"queues", "x"}, wantCode: exitUsage,
			wantErr: "queues takes no arguments"},
		{name: "bad flag", args: []string{"nodes", "--colour"}, wantCode: exitUsage, wantErr: "flag provided but not defined"},
		{name: "missing batch ID", args: []string{"batch", "status"}, wantCode: exitUsage, wantErr: "want one batch ID"},
		{name: "missing file", args: []string{"batch", "submit"}, wantCode: exitUsage, wantErr: "want one FILE"},
		{name: "file that is not there", args: []string{"batch", "submit", "/nonexistent/x.jsonl"}, wantCode: exitFailed,
			wantErr: "cannot read /nonexistent/x.jsonl: no such file or directory"},
		{name: "bad batch ID", args: []string{"batch", "status", "a.b"}, wantCode: exitFailed, wantErr: "no such batch: a.b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := c.runIn(t.Context(), "", tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("ollamaq %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}

// TestHelp checks that every command in the table has its help, the same
// through 'ollamaq help COMMAND' and 'ollamaq COMMAND --help', and that the
// usage lists it.
func TestHelp(t *testing.T) {
	c := newCLI(t, "nats://127.0.0.1:1")
	_, top, _ := c.runIn(t.Context(), "", "help")
	var walk func(cmds []*command, path []string)
	walk = func(cmds []*command, path []string) {
		for _, cmd := range cmds {
			path := append(slices.Clip(path), cmd.name)
			t.Run(strings.Join(path, " "), func(t *testing.T) {
				code, out, errOut := c.runIn(t.Context(), "", append([]string{"help"}, path...)...)
				if code != exitOK || errOut != "" || !strings.HasPrefix(out, "Usage: ollamaq "+strings.Join(path, " ")) {
					t.Errorf("help %s = %d\nstdout: %s\nstderr: %s", strings.Join(path, " "), code, out, errOut)
				}
				if cmd.subs != nil {
					return
				}
				if !strings.Contains(top, "  "+strings.Join(path, " ")) {
					t.Errorf("ollamaq help does not list %s", strings.Join(path, " "))
				}
				code, flagOut, flagErr := c.runIn(t.Context(), "", append(path, "--help")...)
				if code != exitOK || flagOut != "" || flagErr != out {
					t.Errorf("%s --help = %d\nstdout: %s\nstderr: %s\nwant the help on stderr:\n%s", strings.Join(path, " "), code, flagOut, flagErr, out)
				}
			})
			walk(cmd.subs, path)
		}
	}
	walk(commands, nil)
}
