package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// figures are the few numbers of each scenario that the README's summary
// table shows, as the scenario measured them. A scenario that did not run,
// or failed, leaves its figures nil.
type figures struct {
	Overhead   *overheadFigures   `json:"overhead,omitempty"`
	Throughput *throughputFigures `json:"throughput,omitempty"`
	Relay      *relayFigures      `json:"relay,omitempty"`
	Scheduling *schedulingFigures `json:"scheduling,omitempty"`
	Failover   *failoverFigures   `json:"failover,omitempty"`
	Memory     *memoryFigures     `json:"memory,omitempty"`
	Security   *securityFigures   `json:"security,omitempty"`
	Keys       *keysFigures       `json:"keys,omitempty"`
}

// securityFigures: the same deployment with auth and TLS off and on. The
// README's summary does not show them.
type securityFigures struct {
	Off securityLevel `json:"off"`
	On  securityLevel `json:"on"`
}

type securityLevel struct {
	HTTP float64 `json:"http_jobs_per_s"`
	NATS float64 `json:"nats_jobs_per_s"`
	TTFT orInf   `json:"ttft_p50_s"` // one stream
}

// keysFigures: the same deployment with HTTP API keys off and on, with a
// key without limits and one with limits. The README's summary does not
// show them.
type keysFigures struct {
	Off     keysLevel `json:"off"`
	Key     keysLevel `json:"key"`
	Limited keysLevel `json:"key_with_limits"`
}

type keysLevel struct {
	HTTP float64 `json:"http_jobs_per_s"`
	TTFT orInf   `json:"ttft_p50_s"` // one stream
}

// overheadFigures: the median time to first token at each level.
type overheadFigures struct {
	Levels []overheadLevel `json:"levels"`
}

type overheadLevel struct {
	Streams   int     `json:"streams"`
	Direct    float64 `json:"direct_ttft_p50_s"`
	OllamaMax float64 `json:"ollamamax_ttft_p50_s"`
}

type throughputFigures struct {
	HTTP    float64 `json:"http_jobs_per_s"`
	NATS    float64 `json:"nats_jobs_per_s"`
	RawLoop float64 `json:"raw_jetstream_jobs_per_s"`
}

// relayFigures: the paced simulator.
type relayFigures struct {
	Streams     int     `json:"streams"`
	PerStream   float64 `json:"tokens_per_s_per_stream"`
	Direct      float64 `json:"direct_tokens_per_s"`
	OllamaMax   float64 `json:"ollamamax_tokens_per_s"`
	CPUPerToken float64 `json:"relay_cpu_us_per_token"` // dispatcher + worker
}

type schedulingFigures struct {
	Load       float64            `json:"load"` // share of the fleet's nominal capacity offered
	Simulators int                `json:"simulators"`
	Requests   int                `json:"requests"`
	Systems    []schedulingSystem `json:"systems"` // OllamaMax first
}

type schedulingSystem struct {
	Name      string `json:"name"`
	Completed int    `json:"completed"`
	P99       orInf  `json:"latency_p99_s"` // null: the p99 request never completed
}

// failoverFigures: the mid-stream case.
type failoverFigures struct {
	AckWait   float64         `json:"ack_wait_s"`
	OllamaMax failoverSystem  `json:"ollamamax"`
	Nginx     *failoverSystem `json:"nginx,omitempty"`
}

type failoverSystem struct {
	Streams     int     `json:"streams"`
	Completed   int     `json:"completed"`
	Interrupted int     `json:"interrupted"`
	Pause       float64 `json:"heard_nothing_max_s"` // longest silence of an interrupted stream after the kill
}

type memoryFigures struct {
	Streams   int      `json:"streams"`
	Workers   int      `json:"workers"`
	PerStream float64  `json:"ollamamax_per_stream_kib"` // dispatcher and workers together
	Nginx     *float64 `json:"nginx_per_stream_kib,omitempty"`
}

// The README's summary lies between these marker lines, which the driver
// keeps as they are; the begin line may say more before its "-->".
const (
	summaryBegin = "<!-- bench:summary:begin"
	summaryEnd   = "<!-- bench:summary:end -->"
)

// notMeasured fills the cells of a scenario with no figures.
const notMeasured = "not measured in this run"

// summary renders the README's "Measured" paragraph and table. docs is the
// path of the full report relative to the README.
func (r *report) summary(docs string) []byte {
	var b bytes.Buffer
	m := r.machine.short()
	fmt.Fprintf(&b, "`%s` (%s on %s %s, every scenario against its\n", r.command, runTime(r.took), article(m), m)
	fmt.Fprintf(&b, "baseline in the same run; full tables, method and machine in\n[%s](%s)):\n\n", docs, docs)
	f := r.figures
	writeMarkdownTable(&b, table{header: []string{"what", "OllamaMax", "baseline"}, left: true, rows: [][]string{
		f.Overhead.row(),
		f.Throughput.row(),
		f.Relay.row(),
		f.Scheduling.row(),
		f.Failover.row(),
		f.Memory.row(),
	}})
	return b.Bytes()
}

func (o *overheadFigures) row() []string {
	what := "time to first token added by the queue, p50"
	if o == nil || len(o.Levels) == 0 {
		return []string{what, notMeasured, "the simulated Ollama called directly"}
	}
	ends := []overheadLevel{o.Levels[0]}
	if len(o.Levels) > 1 {
		ends = append(ends, o.Levels[len(o.Levels)-1])
	}
	var streams, added []string
	for _, l := range ends {
		streams = append(streams, fmt.Sprint(l.Streams))
		added = append(added, fmt.Sprintf("%+.1f ms (%s)", (l.OllamaMax-l.Direct)*1e3, ratio(l.Direct, l.OllamaMax)))
	}
	return []string{fmt.Sprintf("%s at %s streams", what, strings.Join(streams, " / ")), strings.Join(added, " / "),
		"the simulated Ollama called directly"}
}

func (t *throughputFigures) row() []string {
	what := "short jobs per second, HTTP / NATS-native"
	if t == nil {
		return []string{what, notMeasured, "raw JetStream publish→pull→reply→ack"}
	}
	return []string{what, thousands(t.HTTP) + " / " + thousands(t.NATS), "raw JetStream publish→pull→reply→ack: " + thousands(t.RawLoop)}
}

func (r *relayFigures) row() []string {
	if r == nil {
		return []string{"tokens/s delivered at many streams", notMeasured, "direct"}
	}
	return []string{fmt.Sprintf("tokens/s delivered at %d streams of %g tokens/s", r.Streams, r.PerStream),
		fmt.Sprintf("%.2f× direct, %.0f µs CPU per token", r.OllamaMax/r.Direct, r.CPUPerToken), "direct"}
}

func (s *schedulingFigures) row() []string {
	if s == nil || len(s.Systems) == 0 {
		return []string{"mixed fleet at high load, latency p99", notMeasured, "nginx " + notMeasured}
	}
	what := fmt.Sprintf("mixed fleet (%d speeds) at %.0f%% load, latency p99", s.Simulators, s.Load*100)
	omx := s.Systems[0]
	var cell string
	switch {
	case math.IsInf(float64(omx.P99), 1):
		cell = fmt.Sprintf("%d of %d never completed", s.Requests-omx.Completed, s.Requests)
	case omx.Completed == s.Requests:
		cell = fmt.Sprintf("%s, all %d completed", p99(omx.P99), s.Requests)
	default:
		cell = fmt.Sprintf("%s, %d of %d completed", p99(omx.P99), omx.Completed, s.Requests)
	}
	// nginx's balancers, least_conn (the better) first and named in full.
	var base []string
	for _, name := range []string{"nginx least_conn", "nginx round-robin"} {
		for _, sys := range s.Systems[1:] {
			if sys.Name != name {
				continue
			}
			if len(base) > 0 {
				name = strings.TrimPrefix(name, "nginx ")
			}
			if math.IsInf(float64(sys.P99), 1) {
				base = append(base, fmt.Sprintf("%s: %d never completed", name, s.Requests-sys.Completed))
			} else {
				base = append(base, name+" "+p99(sys.P99))
			}
		}
	}
	if len(base) == 0 {
		base = []string{"nginx " + notMeasured}
	}
	return []string{what, cell, strings.Join(base, "; ")}
}

func (f *failoverFigures) row() []string {
	what := "a worker SIGKILLed mid-stream"
	if f == nil {
		return []string{what, notMeasured, "nginx " + notMeasured}
	}
	o := f.OllamaMax
	cell := "every stream completed"
	if o.Completed < o.Streams {
		cell = fmt.Sprintf("%d of %d streams completed", o.Completed, o.Streams)
	}
	if o.Interrupted > 0 {
		cell += ", ~" + roughly(o.Pause) + " pause"
	}
	if f.AckWait == 10 {
		cell += " (default settings: ack wait 10 s)"
	} else {
		cell += fmt.Sprintf(" (ack wait %g s)", f.AckWait)
	}
	base := "nginx " + notMeasured
	switch {
	case f.Nginx == nil:
	case f.Nginx.Completed < f.Nginx.Streams:
		base = "nginx: the streams broke"
	default:
		base = "nginx: every stream completed"
	}
	return []string{what, cell, base}
}

func (m *memoryFigures) row() []string {
	if m == nil {
		return []string{"memory at many concurrent streams", notMeasured, "nginx " + notMeasured}
	}
	who := "dispatcher + worker"
	if m.Workers > 1 {
		who = fmt.Sprintf("dispatcher + %d workers", m.Workers)
	}
	base := "nginx " + notMeasured
	if m.Nginx != nil {
		base = "nginx " + kib(*m.Nginx)
	}
	return []string{fmt.Sprintf("memory at %s concurrent streams", thousands(float64(m.Streams))),
		fmt.Sprintf("%s per stream (%s)", kib(m.PerStream), who), base}
}

// short describes the machine in a few words: "2-core AMD EPYC VM".
func (m machine) short() string {
	cpu := m.cpu
	for _, s := range []string{"(R)", "(TM)", "(tm)"} {
		cpu = strings.ReplaceAll(cpu, s, "")
	}
	cpu = strings.TrimSuffix(strings.Join(strings.Fields(cpu), " "), " Processor")
	if cpu == "unknown" || cpu == "" {
		cpu = "machine"
		if m.virtual {
			cpu = "virtual machine"
		}
	} else if m.virtual {
		cpu += " VM"
	}
	return fmt.Sprintf("%d-core %s", m.cores, cpu)
}

// article is "an" before a number said with a vowel first (8, 11, 18, 80…),
// else "a".
func article(s string) string {
	n := s[:len(s)-len(strings.TrimLeft(s, "0123456789"))]
	if strings.HasPrefix(n, "8") || n == "11" || n == "18" {
		return "an"
	}
	return "a"
}

// runTime formats a run's duration to the second: "5 min 30 s".
func runTime(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s%60 == 0:
		return fmt.Sprintf("%d min", s/60)
	}
	return fmt.Sprintf("%d min %d s", s/60, s%60)
}

// thousands rounds v and groups its digits by three: 39,127.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// p99 formats a latency percentile of whole jobs: 4.6 s, 850 ms.
func p99(s orInf) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1e3)
	}
	return fmt.Sprintf("%.1f s", s)
}

// roughly formats a pause to one significant unit: 2 s, 300 ms.
func roughly(s float64) string {
	if s < 0.95 {
		return fmt.Sprintf("%.0f ms", s*1e3)
	}
	return fmt.Sprintf("%.0f s", s)
}

// kib formats a size in KiB to about three digits: 100 KiB, 13.6 KiB.
func kib(v float64) string {
	if v >= 99.95 {
		return fmt.Sprintf("%.0f KiB", v)
	}
	return fmt.Sprintf("%.1f KiB", v)
}

// markedSection finds the README's summary: the bytes between the end of
// the begin marker's line and the start of the end marker's line.
func markedSection(readme []byte) (start, end int, err error) {
	lineAt := func(marker string) (int, error) {
		at := -1
		for i := 0; i < len(readme); {
			j := bytes.IndexByte(readme[i:], '\n')
			if j < 0 {
				j = len(readme) - i
			}
			if bytes.HasPrefix(readme[i:i+j], []byte(marker)) {
				if at >= 0 {
					return 0, fmt.Errorf("two lines start with %q", marker)
				}
				at = i
			}
			i += j + 1
		}
		if at < 0 {
			return 0, fmt.Errorf("no line starts with %q", marker)
		}
		return at, nil
	}
	b, err := lineAt(summaryBegin)
	if err != nil {
		return 0, 0, err
	}
	if end, err = lineAt(summaryEnd); err != nil {
		return 0, 0, err
	}
	nl := bytes.IndexByte(readme[b:], '\n')
	if nl < 0 || b+nl+1 > end {
		return 0, 0, errors.New("the end marker does not follow the begin marker")
	}
	return b + nl + 1, end, nil
}

// spliceSummary replaces the README's marked section with the summary,
// leaving every byte outside it, markers included, as it was.
func spliceSummary(readme, summary []byte) ([]byte, error) {
	start, end, err := markedSection(readme)
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, readme[:start]...)
	out = append(out, summary...)
	out = append(out, '\n') // A blank line ends the table before the end marker.
	return append(out, readme[end:]...), nil
}
