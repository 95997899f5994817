package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// resultsFormat is the version of the results file. Bump it when a field
// changes meaning; decoding refuses other versions.
const resultsFormat = 1

// results is a run as saved to docs/benchmarks.json: everything the report,
// the plot and the README's summary are rendered from, so that they can be
// rendered again (-from) without running anything.
type results struct {
	Format int `json:"format"`
	// Provenance says where the figures came from when that was not a
	// plain run of the driver; nothing renders it.
	Provenance string          `json:"provenance,omitempty"`
	Command    string          `json:"command"`
	Note       string          `json:"note,omitempty"`
	Short      bool            `json:"short,omitempty"`
	Started    time.Time       `json:"started"`
	TookS      float64         `json:"took_s"`
	Machine    machineResults  `json:"machine"`
	Figures    figures         `json:"figures"`
	Sections   []sectionResult `json:"sections"`
}

type machineResults struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	Virtual   bool   `json:"virtual"`
	Memory    string `json:"memory"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	Nginx     string `json:"nginx"`
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

type sectionResult struct {
	Name   string        `json:"name"`
	Title  string        `json:"title"`
	Design []string      `json:"design,omitempty"`
	Tables []tableResult `json:"tables"`
	Notes  []string      `json:"notes,omitempty"`
	Error  string        `json:"error,omitempty"`
	TookS  float64       `json:"took_s"`
	Plot   *plotResult   `json:"plot,omitempty"`
}

type tableResult struct {
	Caption string     `json:"caption,omitempty"`
	Header  []string   `json:"header"`
	Rows    [][]string `json:"rows"`
	Left    bool       `json:"left,omitempty"`
}

type plotResult struct {
	Title  string         `json:"title"`
	Series []seriesResult `json:"series"`
}

type seriesResult struct {
	Name   string    `json:"name"`
	Color  string    `json:"color"`
	Values []float64 `json:"values"` // latencies in seconds of the requests that completed
	Total  int       `json:"total"`  // requests, completed or not
}

// results is what the report saves.
func (r *report) results() results {
	m := r.machine
	res := results{
		Format:     resultsFormat,
		Provenance: r.provenance,
		Command:    r.command,
		Note:       r.note,
		Short:      r.short,
		Started:    r.started.UTC(),
		TookS:      r.took.Seconds(),
		Machine: machineResults{CPU: m.cpu, Cores: m.cores, Virtual: m.virtual, Memory: m.memory, OS: m.kernel,
			Go: m.goVer, Nginx: m.nginx, LoadStart: m.loadAvg, LoadEnd: r.loadEnd},
		Figures: r.figures,
	}
	for _, s := range r.sections {
		sr := sectionResult{Name: s.name, Title: s.title, Design: s.design, Notes: s.notes, TookS: s.took.Seconds()}
		if s.err != nil {
			sr.Error = s.err.Error()
		}
		for _, t := range s.tables {
			sr.Tables = append(sr.Tables, tableResult{Caption: t.caption, Header: t.header, Rows: t.rows, Left: t.left})
		}
		if len(s.plot) > 0 {
			sr.Plot = &plotResult{Title: s.plotTitle}
			for _, p := range s.plot {
				sr.Plot.Series = append(sr.Plot.Series, seriesResult{Name: p.name, Color: p.color, Values: p.values, Total: p.total})
			}
		}
		res.Sections = append(res.Sections, sr)
	}
	return res
}

// report is the report the results were saved from.
func (res results) report() *report {
	m := res.Machine
	r := &report{
		machine: machine{cpu: m.CPU, cores: m.Cores, virtual: m.Virtual, memory: m.Memory, kernel: m.OS, goVer: m.Go,
			nginx: m.Nginx, loadAvg: m.LoadStart},
		provenance: res.Provenance,
		command:    res.Command,
		note:       res.Note,
		short:      res.Short,
		started:    res.Started,
		took:       seconds(res.TookS),
		loadEnd:    m.LoadEnd,
		figures:    res.Figures,
	}
	for _, sr := range res.Sections {
		s := &section{name: sr.Name, title: sr.Title, design: sr.Design, notes: sr.Notes, took: seconds(sr.TookS)}
		if sr.Error != "" {
			s.err = errors.New(sr.Error)
		}
		for _, t := range sr.Tables {
			s.tables = append(s.tables, table{caption: t.Caption, header: t.Header, rows: t.Rows, left: t.Left})
		}
		if sr.Plot != nil {
			s.plotTitle = sr.Plot.Title
			for _, p := range sr.Plot.Series {
				s.plot = append(s.plot, series{name: p.Name, color: p.Color, values: p.Values, total: p.Total})
			}
		}
		r.sections = append(r.sections, s)
	}
	return r
}

// seconds converts seconds to a duration, rounded to the microsecond, which
// is as exact as a float64 of seconds keeps a run's times.
func seconds(s float64) time.Duration {
	return time.Duration(math.Round(s*1e6)) * time.Microsecond
}

// encode is the results file: indented, with <, > and & as they are.
func (res results) encode() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// readResults reads a results file.
func readResults(path string) (results, error) {
	var res results
	b, err := os.ReadFile(path)
	if err != nil {
		return res, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	if res.Format != resultsFormat {
		return res, fmt.Errorf("%s: results format %d, this driver reads %d", path, res.Format, resultsFormat)
	}
	return res, nil
}

// orInf is a float64 that may be +Inf (a percentile that fell on a request
// that never completed), which JSON has no number for: it is null there.
type orInf float64

func (f orInf) MarshalJSON() ([]byte, error) {
	switch v := float64(f); {
	case math.IsInf(v, 1):
		return []byte("null"), nil
	case math.IsNaN(v) || math.IsInf(v, -1):
		return nil, fmt.Errorf("%v has no JSON form", v)
	default:
		return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
	}
}

func (f *orInf) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = orInf(math.Inf(1))
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	*f = orInf(v)
	return err
}
