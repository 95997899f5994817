// Command bench is OllamaMax's benchmark driver. It starts the built
// dispatcher, worker and ollamasim binaries (and Debian's nginx, when it is
// installed) as real processes on loopback ports, measures each scenario
// side by side with its baseline in one run, prints a table, and writes the
// results (docs/benchmarks.json) and what is rendered from them: the report
// (docs/benchmarks.md), the scheduling plot (docs/bench-scheduling.svg) and
// the summary table between the bench:summary markers of README.md. With
// -from it runs nothing and renders those files again from saved results,
// for when a template changes.
//
//	go run ./bench -json docs/benchmarks.json -out docs/benchmarks.md -svg docs/bench-scheduling.svg -readme README.md
//	go run ./bench -from docs/benchmarks.json -out docs/benchmarks.md -svg docs/bench-scheduling.svg -readme README.md
//	BENCH_SHORT=1 go run ./bench -bin bin     # seconds: checks the harness, asserts nothing
//
// It speaks the NATS-native protocol through pkg/queue and reads node
// records through pkg/fleet; it imports nothing from cmd/.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is what the command line chooses.
type config struct {
	short      bool
	binDir     string   // prebuilt binaries; "" builds them into the lab
	buildFlags []string // extra go build flags when building (e.g. -race)
	json       string   // results file; "" writes none
	from       string   // render from this results file instead of running
	out        string   // markdown report; "" writes none
	readme     string   // README whose marked summary is rewritten; "" touches none
	svg        string   // scheduling plot; "" writes none
	nginx      string   // nginx binary; "" looks it up, "off" skips it
	only       []string // scenario names to run; empty runs all
	keep       bool     // keep the lab directory (logs, configs)
	command    string   // how the run was started, for the report
	note       string   // a note for the top of the report
	progress   io.Writer
	stdout     io.Writer
}

func (c config) wants(name string) bool { return len(c.only) == 0 || slices.Contains(c.only, name) }

// scenario is one measured comparison.
type scenario struct {
	name  string
	title string
	run   func(ctx context.Context, l *lab, p params, s *section) error
}

// scenarios in the order they run and appear in the report.
var scenarios = []scenario{
	{"overhead", "Overhead: queue path vs. the simulator called directly", runOverhead},
	{"throughput", "Throughput ceiling: short jobs per second", runThroughput},
	{"relay", "Streaming relay: tokens per second and CPU per token", runRelay},
	{"scheduling", "Scheduling on a mixed fleet: OllamaMax vs. nginx", runScheduling},
	{"swap", "Two models on GPUs that hold one: warm-first vs. today's policy vs. nginx", runSwap},
	{"tenants", "Two tenants, one flooding: tenant fairness vs. today's policy vs. nginx", runTenants},
	{"lanes", "A batch of 10,000 lines beside interactive work: interactive reserve vs. today's policy vs. nginx", runLanes},
	{"sessions", "Multi-turn sessions: session affinity vs. today's policy vs. nginx", runSessions},
	{"failover", "Failover: a worker killed with SIGKILL", runFailover},
	{"memory", "Memory at many concurrent streams", runMemory},
	{"large", "Large requests: 8 MiB bodies at once beside streaming answers", runLarge},
	{"security", "Auth and TLS: the cost of NATS operator mode and TLS", runSecurity},
	{"keys", "API keys: the cost of HTTP API keys and rate limits", runKeys},
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if cfg.from != "" {
		err = renderFrom(cfg)
	} else {
		_, err = run(ctx, cfg)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	cfg := config{progress: os.Stderr, stdout: os.Stdout}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./bench [flags]\n\nRuns every benchmark scenario side by side with its baseline and reports ratios.\nScenarios: ")
		for i, s := range scenarios {
			if i > 0 {
				fmt.Fprint(fs.Output(), ", ")
			}
			fmt.Fprint(fs.Output(), s.name)
		}
		fmt.Fprint(fs.Output(), "\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&cfg.short, "short", os.Getenv("BENCH_SHORT") != "", "tiny sizes that only check the harness works [BENCH_SHORT=1]")
	fs.StringVar(&cfg.binDir, "bin", "", "directory with the dispatcher, worker and ollamasim binaries; empty builds them")
	fs.StringVar(&cfg.json, "json", "", "write the results here, to render again with -from (e.g. docs/benchmarks.json)")
	fs.StringVar(&cfg.from, "from", "", "run nothing: render -out, -svg and -readme from this results file (e.g. docs/benchmarks.json)")
	fs.StringVar(&cfg.out, "out", "", "write the markdown report here (e.g. docs/benchmarks.md)")
	fs.StringVar(&cfg.readme, "readme", "", "rewrite the summary between the bench:summary markers of this README (e.g. README.md); needs -out")
	fs.StringVar(&cfg.svg, "svg", "", "write the scheduling latency plot here (e.g. docs/bench-scheduling.svg)")
	fs.StringVar(&cfg.nginx, "nginx", "", "nginx binary for the baselines; empty looks on PATH and in /usr/sbin, off skips them")
	only := fs.String("run", "", "comma-separated scenarios to run; empty runs all")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory with every process's log")
	fs.StringVar(&cfg.command, "command", "", "how this run was started, for the report (default: the driver's own command line)")
	fs.StringVar(&cfg.note, "note", os.Getenv("BENCH_NOTE"), "a note for the top of the report [BENCH_NOTE]")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.readme != "" && cfg.out == "" {
		return cfg, errors.New("-readme needs -out: the summary links to the report")
	}
	if cfg.readme != "" && cfg.short && cfg.from == "" {
		return cfg, errors.New("-readme: short mode measures nothing, and the README shows measurements")
	}
	if cfg.from != "" && *only != "" {
		return cfg, errors.New("-run: -from runs nothing")
	}
	if *only != "" {
		for name := range strings.SplitSeq(*only, ",") {
			name = strings.TrimSpace(name)
			if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == name }) {
				return cfg, fmt.Errorf("-run: unknown scenario %q", name)
			}
			cfg.only = append(cfg.only, name)
		}
	}
	if cfg.command == "" {
		cfg.command = strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
		if cfg.short && !slices.Contains(args, "-short") {
			cfg.command = "BENCH_SHORT=1 " + cfg.command
		}
	}
	return cfg, nil
}

// run runs the chosen scenarios one after the other, each with a bounded
// time, prints the report and writes its files. Every process it started is
// gone when it returns, whatever happened.
func run(ctx context.Context, cfg config) (*report, error) {
	started := time.Now()
	p := fullParams()
	if cfg.short {
		p = shortParams()
	}
	l, err := newLab(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	rep := &report{machine: describeMachine(l), command: cfg.command, note: cfg.note, short: cfg.short, started: started}
	if l.nginx == "" {
		fmt.Fprintln(cfg.progress, "nginx not found: the nginx baselines are skipped (apt-get install nginx-light)")
	}
	var failed []string
	for _, sc := range scenarios {
		if !cfg.wants(sc.name) {
			continue
		}
		fmt.Fprintf(cfg.progress, "== %s\n", sc.title)
		s := &section{name: sc.name, title: sc.title, figures: &rep.figures}
		sctx, cancel := context.WithTimeout(ctx, p.scenarioTimeout)
		t0 := time.Now()
		s.err = sc.run(sctx, l, p, s)
		cancel()
		l.stopAll()
		s.took = time.Since(t0)
		rep.sections = append(rep.sections, s)
		if s.err != nil {
			failed = append(failed, sc.name)
			fmt.Fprintf(cfg.progress, "   %s failed: %v\n", sc.name, s.err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.took, rep.loadEnd = time.Since(started), loadAverage()
	rep.text(cfg.stdout)
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("interrupted; no files written: %w", err)
	}
	if err := writeFiles(cfg, rep); err != nil {
		return rep, err
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return rep, nil
}

// renderFrom renders the files cfg names from the results file cfg.from.
func renderFrom(cfg config) error {
	res, err := readResults(cfg.from)
	if err != nil {
		return err
	}
	return writeFiles(cfg, res.report())
}

// output is a rendered file.
type output struct {
	path string
	data []byte
}

// renderFiles renders the files cfg names from rep: results, plot, report,
// and the README with its summary replaced.
// A run and -from render through it alike.
func renderFiles(cfg config, rep *report) ([]output, error) {
	var out []output
	if cfg.json != "" {
		b, err := rep.results().encode()
		if err != nil {
			return nil, fmt.Errorf("encode results: %w", err)
		}
		out = append(out, output{cfg.json, b})
	}
	rep.svgLink, rep.resultsLink = "", ""
	if saved := cmp.Or(cfg.json, cfg.from); saved != "" && cfg.out != "" {
		if rel, err := filepath.Rel(filepath.Dir(cfg.out), saved); err == nil {
			rep.resultsLink = filepath.ToSlash(rel)
		}
	}
	if cfg.svg != "" {
		if plot := rep.plot(); plot != nil {
			out = append(out, output{cfg.svg, plot})
			if cfg.out != "" {
				if rel, err := filepath.Rel(filepath.Dir(cfg.out), cfg.svg); err == nil {
					rep.svgLink = filepath.ToSlash(rel)
				}
			}
		}
	}
	if cfg.out != "" {
		out = append(out, output{cfg.out, rep.markdown()})
	}
	if cfg.readme != "" {
		if rep.short {
			return nil, errors.New("-readme: these are short-mode results, which mean nothing")
		}
		docs, err := filepath.Rel(filepath.Dir(cfg.readme), cfg.out)
		if err != nil {
			return nil, fmt.Errorf("-readme: %w", err)
		}
		old, err := os.ReadFile(cfg.readme)
		if err != nil {
			return nil, err
		}
		b, err := spliceSummary(old, rep.summary(filepath.ToSlash(docs)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.readme, err)
		}
		out = append(out, output{cfg.readme, b})
	}
	return out, nil
}

// writeFiles renders every file first and writes them only if all rendered.
func writeFiles(cfg config, rep *report) error {
	files, err := renderFiles(cfg, rep)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(cfg.progress, "wrote %s\n", f.path)
	}
	return nil
}

// plot draws the scheduling scenario's latency distributions, or returns nil
// if that scenario did not run.
func (r *report) plot() []byte {
	for _, s := range r.sections {
		if len(s.plot) > 0 {
			return cdfSVG(s.plotTitle, s.plot)
		}
	}
	return nil
}
