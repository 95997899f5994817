//go:build !race

package batch_test

const raceSlack = 1
