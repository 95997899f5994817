//go:build race

package main

// raceBuild: the test binary was built with -race, so the test builds the
// binaries with -race too and links them from the packages the rest of
// `go test -race ./...` has already compiled.
const raceBuild = true
