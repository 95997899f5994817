//go:build unix

package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file in the store directory that the running server holds
// an exclusive flock on, and writes its process ID into.
const lockFile = "ollamamax.lock"

// lockStoreDir creates dir if needed and locks it for this server, so that a
// second server on the same directory fails instead of writing the same
// files. The kernel drops the lock when the process ends, however it ends.
// The returned func releases it.
func lockStoreDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &StoreDirInUseError{Dir: dir, PID: readPID(f)}
		}
		return nil, fmt.Errorf("lock store directory %s: %w", dir, err)
	}
	// The PID is only for the message of a server that finds the lock taken.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) // Without it the message just has no PID.
	}
	return func() { _ = f.Close() }, nil // Closing releases the lock; nothing was buffered.
}

// readPID reads the process ID the lock's holder wrote, or 0.
func readPID(f *os.File) int {
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}
