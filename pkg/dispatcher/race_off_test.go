//go:build !race

package dispatcher_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
