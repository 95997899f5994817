//go:build unix

package dispatcher

import "syscall"

// openFileLimit returns the process's soft limit on open files, or 0 when
// it cannot be read. Go raises the soft limit to the hard one at start on
// Linux, so this is what the process may really open. Unlimited reads as
// a number far above any cap.
func openFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur) // An int64 on some systems, never negative.
}
