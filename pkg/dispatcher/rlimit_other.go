//go:build !unix

package dispatcher

// openFileLimit returns 0: this platform has no open-file limit to read,
// so the connection cap is Config.MaxConns or its default alone.
func openFileLimit() uint64 { return 0 }
