package worker

import (
	"fmt"
	"time"
)

// breakerThreshold is how many jobs in a row must fail on Ollama's side (5xx,
// unreachable) before the worker stops pulling.
const breakerThreshold = 3

// breaker stops a worker from pulling jobs its Ollama keeps failing, which
// other workers can serve: open for a cool-down that doubles while failures
// go on (up to a minute), then one more try. It is guarded by Worker.mu.
type breaker struct {
	failures  int
	openUntil time.Time
	cooldown  time.Duration
	reason    string
}

// record notes how a job went on Ollama's side. It returns true when the
// breaker just opened.
func (b *breaker) record(ok bool, reason string, base time.Duration, now time.Time) bool {
	if ok {
		*b = breaker{}
		return false
	}
	b.failures++
	if b.failures < breakerThreshold {
		return false
	}
	if b.cooldown == 0 {
		b.cooldown = base
	} else {
		b.cooldown = min(2*b.cooldown, time.Minute)
	}
	b.openUntil = now.Add(b.cooldown)
	b.reason = fmt.Sprintf("%d jobs in a row failed on Ollama's side, last: %s", b.failures, reason)
	return true
}

// open reports whether the breaker holds the worker back at now.
func (b *breaker) open(now time.Time) bool { return now.Before(b.openUntil) }
