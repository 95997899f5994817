package worker

import "time"

// cancelMemory is how long a worker remembers the cancel of a job it was not
// running, in case the job reaches it later (a queued job whose requester
// left, racing the requester's delete of it).
const cancelMemory = 10 * time.Minute

// maxCancels bounds the cancels a worker remembers: anyone allowed to cancel
// could otherwise grow the set without limit (3 million cancels of unknown
// jobs took a worker from 18 MB to 480 MB). Past it the oldest is forgotten,
// which at worst lets a long-abandoned job run for nobody.
const maxCancels = 4096

// cancels is a bounded set of canceled job keys (requester.id), each kept
// until its expiry or until maxCancels newer ones push it out. The zero value
// is empty and ready; the worker's mutex guards it.
type cancels struct {
	until map[string]time.Time
	ring  [maxCancels]cancelEntry // insertion order, to forget the oldest
	next  int
}

type cancelEntry struct {
	key   string
	until time.Time
}

func (c *cancels) add(key string, until time.Time) {
	if c.until == nil {
		c.until = make(map[string]time.Time)
	}
	old := c.ring[c.next]
	if u, ok := c.until[old.key]; ok && u.Equal(old.until) {
		delete(c.until, old.key) // The oldest, unless it was added again since.
	}
	c.ring[c.next] = cancelEntry{key, until}
	c.next = (c.next + 1) % maxCancels
	c.until[key] = until
}

func (c *cancels) has(key string) bool {
	_, ok := c.until[key]
	return ok
}

// prune forgets the cancels that expired by now.
func (c *cancels) prune(now time.Time) {
	for k, u := range c.until {
		if now.After(u) {
			delete(c.until, k)
		}
	}
}
