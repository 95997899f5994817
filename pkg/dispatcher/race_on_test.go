//go:build race

package dispatcher_test

// raceEnabled: the test binary was built with -race, which slows JSON
// decoding about tenfold.
const raceEnabled = true
