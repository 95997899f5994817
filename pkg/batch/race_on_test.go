//go:build race

package batch_test

// raceSlack widens heap bounds under the race detector: its GC cycles are
// slow enough that what a running scan allocates during one counts as live.
const raceSlack = 2
