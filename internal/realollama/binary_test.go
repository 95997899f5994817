//go:build linux

package realollama

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ulikunitz/xz"
)

type entry struct {
	name, body, link string
	dir              bool
}

// tarXZ writes the entries as a .tar.xz file and returns its path.
func tarXZ(t *testing.T, entries []entry) string {
	t.Helper()
	var buf bytes.Buffer
	xw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		switch {
		case e.dir:
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "o.tar.xz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var release = []entry{
	{name: "bin/", dir: true},
	{name: "bin/ollama", body: "#!/bin/sh\necho ollama\n"},
	{name: "lib/ollama/libggml.so.0.19.0", body: "elf"},
	{name: "lib/ollama/libggml.so.0", link: "libggml.so.0.19.0"},
}

// TestUnpackConcurrent unpacks one tarball from several goroutines at once,
// each on its own lock file descriptor as separate processes would be, with
// the xz command and with Go's decoder: all get the same complete
// directory, and nothing is left behind.
func TestUnpackConcurrent(t *testing.T) {
	modes := []struct {
		name string
		xz   bool
	}{{"go decoder", false}}
	if _, err := exec.LookPath("xz"); err == nil {
		modes = append(modes, struct {
			name string
			xz   bool
		}{"xz command", true})
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			old := useXZ
			useXZ = m.xz
			t.Cleanup(func() { useXZ = old })
			cache := t.TempDir()
			t.Setenv("XDG_CACHE_HOME", cache)
			tarball := tarXZ(t, release)
			const n = 4
			paths := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { paths[i], errs[i] = unpack(tarball) })
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("unpack %d: %v", i, errs[i])
				}
				if paths[i] != paths[0] {
					t.Errorf("unpack %d: %s, unpack 0: %s", i, paths[i], paths[0])
				}
			}
			if !strings.HasPrefix(paths[0], filepath.Join(cache, "ollamamax")) || filepath.Base(paths[0]) != "ollama" {
				t.Errorf("binary at %s, want bin/ollama under %s/ollamamax", paths[0], cache)
			}
			b, err := os.ReadFile(paths[0])
			if err != nil || string(b) != release[1].body {
				t.Errorf("bin/ollama: %q, %v; want %q", b, err, release[1].body)
			}
			if fi, err := os.Stat(paths[0]); err != nil || fi.Mode()&0o111 == 0 {
				t.Errorf("bin/ollama not executable: %v %v", fi, err)
			}
			root := filepath.Dir(filepath.Dir(paths[0]))
			if l, err := os.Readlink(filepath.Join(root, "lib/ollama/libggml.so.0")); err != nil || l != "libggml.so.0.19.0" {
				t.Errorf("symlink: %q, %v", l, err)
			}
			left, _ := filepath.Glob(filepath.Join(cache, "ollamamax", ".unpack-*"))
			if len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// TestExtractRefuses: entries that would land outside the directory, and
// kinds of entries a release does not hold, fail the unpack.
func TestExtractRefuses(t *testing.T) {
	cases := []struct {
		name  string
		entry entry
	}{
		{"parent", entry{name: "../evil", body: "x"}},
		{"absolute", entry{name: "/tmp/evil", body: "x"}},
		{"link out", entry{name: "lib/evil", link: "../../etc/passwd"}},
		{"absolute link", entry{name: "lib/evil", link: "/etc/passwd"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tarball := tarXZ(t, append(append([]entry(nil), release...), c.entry))
			dir := t.TempDir()
			if err := extract(tarball, dir); err == nil || !strings.Contains(err.Error(), "leaves the directory") {
				t.Errorf("extract: %v, want an error that the entry leaves the directory", err)
			}
		})
	}
}
