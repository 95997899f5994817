package realollama

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/ulikunitz/xz"
	"golang.org/x/sys/cpu"
)

// Version is the Ollama release the suite is measured against, the one of
// the tarball in ../shared/ollama and of the module in go.mod.
const Version = "0.32.15"

// Tarball is the tarball's path inside the shared directory.
const Tarball = "ollama/ollama-" + Version + "-linux-amd64-cpu.tar.xz"

// Environment variables that choose the binary.
const (
	// EnvBinary is the path to an ollama binary to use instead of the
	// tarball's (any build; the CPU is then not checked).
	EnvBinary = "OLLAMAMAX_OLLAMA"
	// EnvShared is the shared directory holding Tarball; the default is
	// the directory "shared" beside the module's root (../shared).
	EnvShared = "OLLAMAMAX_SHARED"
)

// ErrNoOllama means no Ollama binary can be had here: neither EnvBinary
// nor the tarball is there, or the CPU cannot run the tarball's build.
// Start skips the test with the reason; other errors fail it.
var ErrNoOllama = errors.New("realollama: no Ollama binary")

var found struct {
	sync.Mutex
	done bool
	path string
	err  error
}

// Binary returns the path of an ollama binary: EnvBinary's, or the
// tarball's unpacked into the cache (once per machine, and once per process
// it looks). An error wraps ErrNoOllama when there is none to be had.
// It is safe for concurrent use, by goroutines and by processes.
func Binary() (string, error) {
	found.Lock()
	defer found.Unlock()
	if !found.done {
		found.path, found.err = binary()
		found.done = true
	}
	return found.path, found.err
}

func binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("realollama: %s=%s: %w", EnvBinary, p, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("realollama: %s=%s is not an executable file", EnvBinary, p)
		}
		return p, nil
	}
	shared := os.Getenv(EnvShared)
	if shared == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("%w: %v; set %s or %s", ErrNoOllama, err, EnvBinary, EnvShared)
		}
		shared = filepath.Join(filepath.Dir(root), "shared")
	}
	tarball := filepath.Join(shared, Tarball)
	if _, err := os.Stat(tarball); err != nil {
		return "", fmt.Errorf("%w: no %s (set %s to an ollama binary, or %s to a directory holding %s)",
			ErrNoOllama, tarball, EnvBinary, EnvShared, Tarball)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return "", fmt.Errorf("%w: %s is for linux/amd64, this is %s/%s (set %s)", ErrNoOllama, Tarball, runtime.GOOS, runtime.GOARCH, EnvBinary)
	}
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		return "", fmt.Errorf("%w: %s's CPU backend needs AVX2 and FMA, which this CPU lacks (set %s)", ErrNoOllama, Tarball, EnvBinary)
	}
	return unpack(tarball)
}

// moduleRoot is the nearest directory above the working directory (a
// test's is its package's) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// cacheDir is where unpacked tarballs live: the user's cache directory, or
// the temporary one where that cannot be made.
func cacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		d = filepath.Join(d, "ollamamax")
		if os.MkdirAll(d, 0o755) == nil {
			return d
		}
	}
	d := filepath.Join(os.TempDir(), "ollamamax-cache")
	_ = os.MkdirAll(d, 0o755) // A failure shows in the lock file's creation.
	return d
}

// unpack unpacks tarball into the cache once per machine and returns its
// bin/ollama. The directory is named after the tarball's digest and appears
// only complete, by a rename; a lock file keeps concurrent test processes
// from unpacking it twice at once.
func unpack(tarball string) (string, error) {
	sum, err := digest(tarball)
	if err != nil {
		return "", fmt.Errorf("realollama: %w", err)
	}
	name := "ollama-" + Version + "-" + sum[:12]
	cache := cacheDir()
	dir := filepath.Join(cache, name)
	bin := filepath.Join(dir, "bin", "ollama")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	unlock, err := lock(filepath.Join(cache, name+".lock"))
	if err != nil {
		return "", fmt.Errorf("realollama: lock the cache: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil { // Another process unpacked it meanwhile.
		return bin, nil
	}
	// What an interrupted unpack left behind: nobody else holds the lock.
	if stale, _ := filepath.Glob(filepath.Join(cache, ".unpack-"+name+"-*")); len(stale) > 0 {
		for _, s := range stale {
			_ = os.RemoveAll(s) // Garbage either way; a leftover is harmless.
		}
	}
	tmp, err := os.MkdirTemp(cache, ".unpack-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("realollama: unpack %s: %w", tarball, err)
	}
	if err := extract(tarball, tmp); err != nil {
		_ = os.RemoveAll(tmp) // The error says what went wrong.
		return "", fmt.Errorf("realollama: unpack %s: %w", tarball, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "bin", "ollama")); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("realollama: unpack %s: no bin/ollama in it", tarball)
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("realollama: unpack %s: %w", tarball, err)
	}
	return bin, nil
}

func digest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// extract writes the .tar.xz at path into dir: directories, regular files
// and symbolic links that stay inside dir; anything else is an error.
func extract(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	xr, wait, err := decompress(f)
	if err != nil {
		return err
	}
	if err := untar(xr, dir); err != nil {
		_ = wait() // The tar error is the one to report.
		return err
	}
	return wait()
}

// useXZ says whether decompress may use the xz command. Go's decoder needs
// five seconds for the tarball where xz needs one (half a minute under the
// race detector): it is the fallback where xz is not installed.
var useXZ = true

// decompress returns r decompressed, and a func to call once it has been
// read to its end, which reports what went wrong in the xz command.
func decompress(r io.Reader) (io.Reader, func() error, error) {
	if bin, err := exec.LookPath("xz"); useXZ && err == nil {
		cmd := exec.Command(bin, "-dc")
		cmd.Stdin = r
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		return out, func() error {
			_, _ = io.Copy(io.Discard, out) // Let xz finish writing.
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("xz -dc: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
			}
			return nil
		}, nil
	}
	xr, err := xz.NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	return xr, func() error { return nil }, nil
}

// untar writes the tar stream r into dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("entry %q leaves the directory", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := writeFile(target, tr, os.FileMode(h.Mode)&0o755|0o644); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if filepath.IsAbs(h.Linkname) || !filepath.IsLocal(filepath.Join(filepath.Dir(name), h.Linkname)) {
				return fmt.Errorf("link %q -> %q leaves the directory", h.Name, h.Linkname)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: unexpected type %q", h.Name, h.Typeflag)
		}
	}
}

func writeFile(path string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close() // The copy's error is the one to report.
		return err
	}
	return f.Close()
}
