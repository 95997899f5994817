package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"slices"
)

// series is one line of the latency plot: the latencies (seconds) of the
// requests that completed, out of total requests.
type series struct {
	name   string
	color  string
	values []float64
	total  int
}

// Plot geometry, in SVG user units.
const (
	plotW, plotH      = 760, 440
	marginL, marginR  = 64, 20
	marginT, marginB  = 40, 56
	innerW            = plotW - marginL - marginR
	innerH            = plotH - marginT - marginB
	legendW, legendDY = 300, 18
)

// cdfSVG draws the cumulative distribution of each series: x is the latency
// on a log scale, y the share of all requests (completed or not) that
// finished within it, so a series that did not complete everything ends
// below 100%.
func cdfSVG(title string, ss []series) []byte {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, v := range s.values {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0.1, 1
	}
	// 1-2-5 steps around the data, where the ticks are.
	xmin, xmax := niceFloor(lo), niceCeil(hi)
	if xmax <= xmin {
		xmax = niceCeil(xmin * 1.01)
	}
	x := func(v float64) float64 {
		return marginL + innerW*(math.Log10(v)-math.Log10(xmin))/(math.Log10(xmax)-math.Log10(xmin))
	}
	y := func(frac float64) float64 { return marginT + innerH*(1-frac) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", marginL, marginT-16, esc(title))

	// Grid and ticks.
	for frac := 0.0; frac <= 1.0001; frac += 0.2 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y(frac), marginL+innerW, y(frac))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%.0f%%</text>`+"\n", marginL-6, y(frac), frac*100)
	}
	for e := math.Floor(math.Log10(xmin)); e <= math.Ceil(math.Log10(xmax)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < xmin*0.9999 || v > xmax*1.0001 {
				continue
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(v), marginT, x(v), marginT+innerH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(v), marginT+innerH+16, tickLabel(v))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", marginL, marginT, innerW, innerH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">latency from arrival to the last token (log scale)</text>`+"\n",
		marginL+innerW/2, plotH-14)
	fmt.Fprintf(&b, `<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">requests finished within</text>`+"\n", marginT+innerH/2)

	// One step line per series.
	for _, s := range ss {
		v := slices.Clone(s.values)
		slices.Sort(v)
		var pts bytes.Buffer
		fmt.Fprintf(&pts, "%.1f,%.1f", x(xmin), y(0))
		for k, val := range v {
			val = math.Max(val, xmin)
			prev := float64(k) / float64(max(s.total, 1))
			next := float64(k+1) / float64(max(s.total, 1))
			fmt.Fprintf(&pts, " %.1f,%.1f %.1f,%.1f", x(val), y(prev), x(val), y(next))
		}
		last := float64(len(v)) / float64(max(s.total, 1))
		fmt.Fprintf(&pts, " %.1f,%.1f", x(xmax), y(last))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, pts.String())
	}
	// The legend goes to the bottom right, where latency is high and the
	// share finished is low: a corner every curve has left.
	legendX := marginL + innerW - legendW - 10
	legendY := marginT + innerH - 10 - len(ss)*legendDY
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="white" fill-opacity="0.9" stroke="#ccc"/>`+"\n",
		legendX-8, legendY-6, legendW+8, len(ss)*legendDY+4)
	for i, s := range ss {
		ly := legendY + legendDY/2 + i*legendDY - 2
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", legendX, ly, legendX+22, ly, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">%s (%d of %d completed)</text>`+"\n",
			legendX+28, ly, esc(s.name), len(s.values), s.total)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceFloor is the largest 1, 2 or 5 times a power of ten at or below v.
func niceFloor(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= v {
			return m * p
		}
	}
	return p
}

// niceCeil is the smallest 1, 2 or 5 times a power of ten at or above v.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// tickLabel prints a latency in seconds compactly: 0.1 s, 2 s, 50 s.
func tickLabel(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%g s", math.Round(v*1000)/1000)
	}
	return fmt.Sprintf("%g s", math.Round(v))
}

// esc escapes text for SVG.
func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // Writing to a bytes.Buffer cannot fail.
	return b.String()
}
