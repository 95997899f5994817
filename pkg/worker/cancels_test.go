package worker

import (
	"strconv"
	"testing"
	"time"
)

func TestCancelsAreBounded(t *testing.T) {
	var c cancels
	now := time.Now()
	for i := range 10 * maxCancels {
		c.add("r."+strconv.Itoa(i), now.Add(time.Minute))
	}
	if n := len(c.until); n != maxCancels {
		t.Fatalf("%d cancels remembered, want the bound %d", n, maxCancels)
	}
	if last := "r." + strconv.Itoa(10*maxCancels-1); !c.has(last) {
		t.Error("the newest cancel was forgotten")
	}
	if c.has("r.0") {
		t.Error("the oldest cancel is still remembered past the bound")
	}
	// A key added again is not forgotten with its first entry.
	c.add("again", now.Add(time.Minute))
	for i := range maxCancels - 1 {
		c.add("x."+strconv.Itoa(i), now.Add(time.Minute))
	}
	c.add("again", now.Add(2*time.Minute))
	c.add("y", now.Add(time.Minute)) // Overwrites the slot of the first "again".
	if !c.has("again") {
		t.Error("a cancel added again was forgotten with its older entry")
	}
	c.prune(now.Add(90 * time.Second))
	if !c.has("again") || c.has("y") {
		t.Errorf("after prune: again %v (want true), y %v (want false)", c.has("again"), c.has("y"))
	}
}
