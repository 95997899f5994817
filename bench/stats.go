package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// quantile returns the q-quantile (0 ≤ q ≤ 1) of sorted by the nearest-rank
// method: the smallest value with at least q of the values at or below it.
// Values may be +Inf (requests that never completed). It returns NaN for no
// values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// sample is a set of durations in seconds, sorted once.
type sample struct {
	v []float64
}

// newSample sorts the values.
func newSample(v []float64) sample {
	v = slices.Clone(v)
	slices.Sort(v)
	return sample{v}
}

// durations makes a sample of durations.
func durations(ds []time.Duration) sample {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = d.Seconds()
	}
	return newSample(v)
}

func (s sample) n() int              { return len(s.v) }
func (s sample) q(q float64) float64 { return quantile(s.v, q) }
func (s sample) p50() float64        { return s.q(0.50) }
func (s sample) p99() float64        { return s.q(0.99) }
func (s sample) max() float64        { return s.q(1) }
func (s sample) finite() []float64   { return s.v[:s.completed()] }
func (s sample) completed() int      { return len(s.v) - s.infinite() }
func (s sample) infinite() (n int) {
	for i := len(s.v) - 1; i >= 0 && math.IsInf(s.v[i], 1); i-- {
		n++
	}
	return n
}

// ms formats seconds as milliseconds.
func ms(s float64) string {
	switch {
	case math.IsNaN(s):
		return "—"
	case math.IsInf(s, 1):
		return "not completed"
	case s < 0.01:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s < 1:
		return fmt.Sprintf("%.1f ms", s*1e3)
	}
	return fmt.Sprintf("%.0f ms", s*1e3)
}

// secs formats seconds for latencies of whole jobs.
func secs(s float64) string {
	switch {
	case math.IsNaN(s):
		return "—"
	case math.IsInf(s, 1):
		return "not completed"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1e3)
	}
	return fmt.Sprintf("%.2f s", s)
}

// delta formats b-a in milliseconds with a sign.
func delta(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return "—"
	}
	d := (b - a) * 1e3
	if math.Abs(d) < 10 {
		return fmt.Sprintf("%+.2f ms", d)
	}
	return fmt.Sprintf("%+.1f ms", d)
}

// ratio formats b/a as a factor.
func ratio(a, b float64) string {
	switch {
	case math.IsNaN(a) || math.IsNaN(b) || a == 0:
		return "—"
	case math.IsInf(b, 1) && !math.IsInf(a, 1):
		return "∞"
	case math.IsInf(a, 0) || math.IsInf(b, 0):
		return "—"
	}
	r := b / a
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// rate formats a per-second rate.
func rate(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// mib formats bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
