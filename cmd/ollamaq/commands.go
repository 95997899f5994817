package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// runFunc runs a command once its flags are parsed; args are the arguments
// after the flags. It returns the exit code.
type runFunc func(ctx context.Context, e *env, args []string) int

// command is one entry of the command table: dispatch, 'ollamaq help
// COMMAND', --help and the usage listings all read it, so a command added
// here has its help without more code.
type command struct {
	name    string
	args    string // the arguments, as listings show them: "FILE", "ID", "SEQ..."; "" takes none
	summary string // one line for the listings
	heading string // a top-level command's section in 'ollamaq help'; a section runs until the heading changes
	// usage is the help text. A leaf command's help goes on with its flags;
	// a group's with the list of its commands and then more.
	usage string
	more  string
	// flags defines a leaf command's own flags on fs and returns what runs
	// it once they are parsed.
	flags func(fs *flag.FlagSet) runFunc
	// interspersed lets flags follow the arguments (auth add NAME --role
	// worker); "--" ends the flags.
	interspersed bool
	subs         []*command // a group's commands (batch, dlq, keys, auth)
}

// commands is the table of ollamaq's commands, in the order 'ollamaq help'
// lists them.
var commands = []*command{
	{name: "batch", heading: "Batch files (OpenAI Batch API format, one request per line):", usage: batchUsage, more: batchMore,
		subs: []*command{
			{name: "submit", args: "FILE", summary: "queue every line of FILE as batch work; prints the batch ID",
				usage: batchSubmitSynopsis, flags: cmdBatchSubmit},
			{name: "status", args: "ID", summary: "where a batch is: queued, running, done, failed",
				usage: batchStatusSynopsis, flags: cmdBatchStatus},
			{name: "wait", args: "ID", summary: "follow a batch until it is done, with progress",
				usage: batchWaitSynopsis, flags: cmdBatchWait},
			{name: "results", args: "ID", summary: "write the results as OpenAI Batch output lines",
				usage: batchResultsSynopsis, flags: cmdBatchResults},
			{name: "list", summary: "every batch the queue knows", usage: batchListSynopsis, flags: cmdBatchList},
			{name: "cancel", args: "ID", summary: "drop a batch's queued lines and stop its running ones",
				usage: batchCancelSynopsis, flags: cmdBatchCancel},
		}},
	{name: "nodes", heading: "The fleet:", summary: "the workers, their models, slots and health", usage: nodesSynopsis, flags: cmdNodes},
	{name: "queues", heading: "The fleet:", summary: "jobs waiting and running, per model and class", usage: queuesSynopsis, flags: cmdQueues},
	{name: "top", heading: "The fleet:", summary: "nodes, their rates and the queues, refreshed live", usage: topSynopsis, flags: cmdTop},
	{name: "config", heading: "The fleet:", usage: configUsage, more: configMore,
		subs: []*command{
			{name: "show", args: "[ENTRY]", summary: "the shared settings of dispatchers and workers", usage: configShowSynopsis, flags: cmdConfigShow},
			{name: "set", interspersed: true, args: "ENTRY FILE", summary: "share FILE's settings with every dispatcher or every worker",
				usage: configSetSynopsis, flags: cmdConfigSet},
			{name: "unset", interspersed: true, args: "ENTRY", summary: "share none", usage: configUnsetSynopsis, flags: cmdConfigUnset},
		}},
	{name: "dlq", heading: "Dead letters (jobs given up on):", usage: dlqUsage, more: dlqMore,
		subs: []*command{
			{name: "list", summary: "the dead letters and why", usage: dlqListSynopsis, flags: cmdDLQList},
			{name: "show", args: "SEQ", summary: "one, with its request", usage: dlqShowSynopsis, flags: cmdDLQShow},
			{name: "requeue", args: "SEQ...", summary: "put them back on their queues", usage: dlqRequeueSynopsis, flags: cmdDLQRequeue},
		}},
	{name: "keys", heading: "HTTP API keys, usage and the audit trail:", usage: keysUsage, more: keysMore,
		subs: []*command{
			{name: "create", interspersed: true, args: "NAME", summary: "create a key for a tenant; prints its secret once",
				usage: keysCreateSynopsis, flags: cmdKeysCreate},
			{name: "list", summary: "the keys, their tenants, models, bounds and state", usage: keysListSynopsis, flags: cmdKeysList},
			{name: "revoke", interspersed: true, args: "ID", summary: "refuse a key on every dispatcher from now on",
				usage: keysRevokeSynopsis, flags: cmdKeysRevoke},
			{name: "rotate", interspersed: true, args: "ID", summary: "give a key a new secret; prints it once",
				usage: keysRotateSynopsis, flags: cmdKeysRotate},
		}},
	{name: "usage", heading: "HTTP API keys, usage and the audit trail:", summary: "tokens and time per tenant, key or model, from the audit trail",
		usage: usageSynopsis, flags: cmdUsage},
	{name: "audit", heading: "HTTP API keys, usage and the audit trail:", summary: "the audit trail: who ran what, and management actions",
		usage: auditSynopsis, flags: cmdAudit},
	{name: "auth", heading: "Credentials (NATS operator, accounts, users):", usage: authUsage, more: authMore,
		subs: []*command{
			{name: "init", interspersed: true, args: "[DIR]", summary: "create the auth directory: operator, accounts, role signing keys",
				usage: authInitSynopsis, flags: cmdAuthInit},
			{name: "add", interspersed: true, args: "NAME", summary: "issue credentials for a worker, client, dispatcher or admin",
				usage: authAddSynopsis, flags: cmdAuthAdd},
			{name: "list", interspersed: true, summary: "the credentials issued, their roles and status", usage: authListSynopsis, flags: cmdAuthList},
			{name: "revoke", interspersed: true, args: "NAME", summary: "revoke credentials and disconnect them from the servers",
				usage: authRevokeSynopsis, flags: cmdAuthRevoke},
			{name: "export", interspersed: true, summary: "the operator and accounts for an existing NATS cluster's config",
				usage: authExportSynopsis, flags: cmdAuthExport},
			{name: "upgrade", interspersed: true, summary: "bring an older directory's role permissions up to this version",
				usage: authUpgradeSynopsis, flags: cmdAuthUpgrade},
		}},
	{name: "run", args: "MODEL PROMPT", heading: "One request:", summary: "stream a reply to PROMPT from MODEL through the queue",
		usage: runSynopsis, flags: cmdRun},
}

// root is the top of the table: ollamaq itself.
var root = &command{subs: commands}

// sub returns g's command called name, or nil.
func (g *command) sub(name string) *command {
	for _, c := range g.subs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// help is g's help text: ollamaq's usage for root, a group's otherwise.
func (g *command) help(path string) string {
	if g == root {
		return usage()
	}
	return groupHelp(path, g)
}

// dispatch runs the command of group g (at path: "" for root, "batch")
// that args name.
func (e *env) dispatch(ctx context.Context, g *command, path string, args []string) int {
	cmd := g.sub(args[0])
	switch {
	case cmd == nil && g != root && isHelp(args[0]):
		fmt.Fprint(e.stderr, g.help(path))
		return exitOK
	case cmd == nil:
		return e.unknown(g, path, args[0])
	}
	path = strings.TrimSpace(path + " " + cmd.name)
	if cmd.subs != nil {
		if len(args) == 1 {
			fmt.Fprint(e.stderr, cmd.help(path))
			return exitUsage
		}
		return e.dispatch(ctx, cmd, path, args[1:])
	}
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	run := cmd.flags(fs)
	fs.Usage = func() { writeHelp(e.stderr, cmd, fs) }
	e.conn.register(fs, nil)
	positional, err := parseFlags(fs, args[1:], cmd.interspersed)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if cmd.args == "" && len(positional) > 0 {
		return e.fail(exitUsage, "%s takes no arguments (see --help)", path)
	}
	return run(ctx, e, positional)
}

// parseFlags parses args into fs and returns the arguments that are not
// flags. With interspersed, flags may also follow arguments; without, the
// first argument ends the flags, as in the flag package.
func parseFlags(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	if err := fs.Parse(args); err != nil || !interspersed {
		return fs.Args(), err
	}
	var positional []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil // Everything after "--" is an argument.
		}
		positional = append(positional, rest[0])
		args = rest[1:]
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
	}
	return positional, nil
}

// help prints the usage, or with 'help COMMAND...' that command's help, on
// stdout.
func (e *env) help(args []string) int {
	g, path := root, ""
	for _, name := range args {
		cmd := g.sub(name)
		if cmd == nil {
			return (&env{stderr: e.stdout}).unknown(g, path, name)
		}
		path = strings.TrimSpace(path + " " + cmd.name)
		if cmd.subs == nil {
			fs := flag.NewFlagSet(path, flag.ContinueOnError)
			cmd.flags(fs)
			writeHelp(e.stdout, cmd, fs)
			return exitOK
		}
		g = cmd
	}
	fmt.Fprint(e.stdout, g.help(path))
	return exitOK
}

func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// unknown says that group g (at path) has no command name, and shows g's help.
func (e *env) unknown(g *command, path, name string) int {
	fmt.Fprintf(e.stderr, "%s: unknown command %q\n\n%s", strings.TrimSpace("ollamaq "+path), name, g.help(path))
	return exitUsage
}

// usage is the text of 'ollamaq help': the commands by section, then the
// connection flags and exit codes.
func usage() string {
	var b strings.Builder
	b.WriteString("Usage: ollamaq [connection flags] COMMAND [flags] [args]\n")
	heading := ""
	for _, c := range commands {
		if c.heading != heading {
			heading = c.heading
			fmt.Fprintf(&b, "\n%s\n", heading)
		}
		if c.subs == nil {
			listCommand(&b, 20, c.name, c)
		}
		for _, s := range c.subs {
			listCommand(&b, 20, c.name+" "+s.name, s)
		}
	}
	b.WriteString("\n" + usageMore)
	return b.String()
}

// groupHelp is the help of a group of commands such as batch.
func groupHelp(path string, g *command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: ollamaq %s COMMAND [flags] [args]\n\n%s\nCommands:\n", path, g.usage)
	width := 0
	for _, s := range g.subs {
		width = max(width, len(strings.TrimSpace(s.name+" "+s.args))+3)
	}
	for _, s := range g.subs {
		listCommand(&b, width, s.name, s)
	}
	fmt.Fprintf(&b, "\n%s\n'ollamaq %s COMMAND --help' shows a command's flags.\n", g.more, path)
	return b.String()
}

// listCommand writes c's line of a listing, its name and arguments padded
// to width.
func listCommand(w io.Writer, width int, name string, c *command) {
	fmt.Fprintf(w, "  %-*s %s\n", width, strings.TrimSpace(name+" "+c.args), c.summary)
}

// writeHelp writes a leaf command's help: its usage, then its own flags.
func writeHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprint(w, c.usage)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if connFlagNames[f.Name] {
			return
		}
		if first {
			fmt.Fprint(w, "\nFlags:\n")
			first = false
		}
		printFlag(w, f)
	})
	fmt.Fprintln(w, "\nConnection flags as for ollamaq (see 'ollamaq help').")
}

// printFlag prints one flag as flag.PrintDefaults does.
func printFlag(w io.Writer, f *flag.Flag) {
	name, use := flag.UnquoteUsage(f)
	line := "  --" + f.Name
	if name != "" {
		line += " " + name
	}
	line += "\n    \t" + use
	if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
		line += fmt.Sprintf(" (default %s)", f.DefValue)
	}
	fmt.Fprintln(w, line)
}
