//go:build !linux

package realollama

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// Elsewhere only EnvBinary's server runs (the tarball is for Linux), in the
// test's process group and unpinned.

func lock(string) (func(), error) { return nil, errors.New("not supported on this platform") }

func procAttr() *syscall.SysProcAttr { return nil }

func signalGroup(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

func startPinned(cmd *exec.Cmd, _ int) (int, string, error) {
	return -1, "pinning needs Linux", cmd.Start()
}
