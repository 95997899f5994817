package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/queue"
)

// positionLine shows where a job waits in the queue, on stderr, as workers
// report it (docs/protocol.md, "Queue position"): one line replaced in
// place on a terminal, a line per change of position otherwise, a JSON
// event per report with --json. Reports come on the reply subscription's
// goroutine, so every write goes through mu, and none after done.
type positionLine struct {
	e      *env
	asJSON bool

	mu    sync.Mutex
	last  int  // the position last printed
	shown bool // a line on the terminal to clear
	over  bool
}

// queuedEvent is the --json form of a report.
type queuedEvent struct {
	Event    string `json:"event"` // "queued"
	Position int    `json:"position"`
	ETAMs    int64  `json:"eta_ms,omitempty"`
}

// report prints p.
func (l *positionLine) report(_ string, p queue.Position) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over {
		return
	}
	if l.asJSON {
		ev := queuedEvent{Event: "queued", Position: p.Position}
		if p.ETA > 0 {
			ev.ETAMs = max(p.ETA.Milliseconds(), 1)
		}
		b, _ := json.Marshal(ev) // A struct of ints and a string always marshals.
		fmt.Fprintf(l.e.stderr, "%s\n", b)
		return
	}
	text := fmt.Sprintf("queued: position %d", p.Position)
	if p.ETA > 0 {
		text += ", about " + roundETA(p.ETA).String() + " to wait"
	}
	switch {
	case l.e.terminal:
		fmt.Fprintf(l.e.stderr, "\r\033[K%s", text)
		l.shown = true
	case p.Position != l.last:
		fmt.Fprintln(l.e.stderr, text)
	}
	l.last = p.Position
}

// done ends the display: the terminal's line is cleared; later reports are
// not printed.
func (l *positionLine) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown {
		fmt.Fprint(l.e.stderr, "\r\033[K")
		l.shown = false
	}
	l.over = true
}

// roundETA rounds an ETA for people: to the second, or to the tenth under
// ten seconds.
func roundETA(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return max(d.Round(100*time.Millisecond), 100*time.Millisecond)
	}
	return d.Round(time.Second)
}
