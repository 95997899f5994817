package main

import (
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows how far something countable got: a bar on a terminal,
// plain lines every e.every otherwise. It writes to stderr.
type progress struct {
	e     *env
	what  string
	bar   *progressbar.ProgressBar
	start time.Time
	from  int // done when progress began, for the rate
	total int
	last  time.Time
	done  int
}

func (e *env) newProgress(what string, total, done int) *progress {
	p := &progress{e: e, what: what, start: time.Now(), from: done, total: total, last: time.Now()}
	if e.terminal {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("req"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionSetWidth(30),
		)
		_ = p.bar.Set(done) // Writing progress can only fail on a closed terminal.
	}
	return p
}

// update shows done of the total, and what else is worth saying (failed).
func (p *progress) update(done int, detail string) {
	p.done = done
	if p.bar != nil {
		if detail != "" {
			p.bar.Describe(p.what + " (" + detail + ")")
		}
		_ = p.bar.Set(done)
		return
	}
	if time.Since(p.last) < p.e.every {
		return
	}
	p.last = time.Now()
	p.line(detail)
}

// line prints a plain progress line: count, rate and time left.
func (p *progress) line(detail string) {
	s := fmt.Sprintf("%s: %d/%d", p.what, p.done, p.total)
	if p.total < 0 {
		s = fmt.Sprintf("%s: %d", p.what, p.done)
	}
	if detail != "" {
		s += ", " + detail
	}
	if el := time.Since(p.start).Seconds(); el > 0 && p.done > p.from {
		rate := float64(p.done-p.from) / el
		s += fmt.Sprintf(", %.1f/s", rate)
		if left := p.total - p.done; p.total > 0 && left > 0 {
			s += ", about " + (time.Duration(float64(left)/rate) * time.Second).Round(time.Second).String() + " left"
		}
	}
	fmt.Fprintln(p.e.stderr, s)
}

// finish ends the display: the bar is completed, or a last line printed.
func (p *progress) finish(detail string) {
	if p.bar != nil {
		if detail != "" {
			p.bar.Describe(p.what + " (" + detail + ")")
		}
		_ = p.bar.Set(p.done)
		_ = p.bar.Exit()
		fmt.Fprintln(p.e.stderr)
		return
	}
}
