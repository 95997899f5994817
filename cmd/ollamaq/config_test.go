package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfig sets, shows and unsets the shared settings: set refuses, and
// leaves the entry as it was, lines that are not name=value, names that
// cannot be shared (unknown, restart-only or a machine's file) and values
// that do not parse; each change is in the audit trail.
func TestConfig(t *testing.T) {
	_, c := deployment(t)
	if code, out, errOut := c.run("config", "show"); code != exitOK || out != "" || !strings.Contains(errOut, "no shared settings") {
		t.Fatalf("show with none: exit %d, %q, %q", code, out, errOut)
	}
	shared := "# every dispatcher\nqueue-wait=45s\nOLLAMAMAX_MAX_QUEUED=200\n"
	code, out, errOut := c.runIn(t.Context(), shared, "--server", c.server, "config", "set", "dispatcher", "-")
	if code != exitOK || !strings.Contains(out, "shared settings dispatcher set (revision") {
		t.Fatalf("set dispatcher: exit %d, %q, %q", code, out, errOut)
	}
	file := filepath.Join(t.TempDir(), "worker.conf")
	if err := os.WriteFile(file, []byte("slots=4\nlabel=gpu=a100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := c.run("config", "set", "worker", file); code != exitOK {
		t.Fatalf("set worker from a file: exit %d, %s", code, errOut)
	}

	for _, tt := range []struct{ entry, text, want string }{
		{"dispatcher", "queue-wait 45s", `line 1: want name=value, got "queue-wait 45s"`},
		{"dispatcher", "queue-wait=soon", `line 1: queue-wait="soon"`},
		{"dispatcher", "listen=0.0.0.0:11435", `line 1: "listen" cannot be shared: the shared settings may hold log-level, origins, max-body`},
		{"dispatcher", "max-body=1\ntls-cert=/etc/api.pem", "line 2: tls-cert names a file of each machine"},
		{"worker", "slots=four", `line 1: slots="four"`},
		{"worker", "label=gpu", `label "gpu" is not key=value`},
		{"worker", "queue-wait=1m", `"queue-wait" cannot be shared: the shared settings may hold log-level, slots, interactive-reserve, label, grace`},
		{"nodes", "x=1", `no entry "nodes": want dispatcher or worker`},
	} {
		code, _, errOut := c.runIn(t.Context(), tt.text, "--server", c.server, "config", "set", tt.entry, "-")
		if code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("set %s %q: exit %d, %q; want 2 and %q", tt.entry, tt.text, code, errOut, tt.want)
		}
	}

	code, out, errOut = c.run("config", "show", "--json")
	if code != exitOK {
		t.Fatalf("show --json: exit %d, %s", code, errOut)
	}
	var rows []configRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Entry != "dispatcher" || rows[0].Settings != shared || rows[1].Entry != "worker" || rows[1].Settings != "slots=4\nlabel=gpu=a100\n" {
		t.Errorf("show --json after the refused sets: %+v, want both entries as set", rows)
	}
	if code, out, _ := c.run("config", "show", "worker"); code != exitOK || !strings.HasPrefix(out, "# worker (revision ") || !strings.HasSuffix(out, "\nslots=4\nlabel=gpu=a100\n") {
		t.Errorf("show worker: exit %d:\n%s", code, out)
	}

	if code, out, errOut := c.run("config", "unset", "worker"); code != exitOK || !strings.Contains(out, "shared settings worker removed") {
		t.Fatalf("unset worker: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, _ := c.run("config", "show"); code != exitOK || !strings.HasPrefix(out, "# dispatcher") || strings.Contains(out, "worker") {
		t.Errorf("show after unset: exit %d:\n%s", code, out)
	}

	code, out, errOut = c.run("audit", "--kind", "admin", "--json")
	if code != exitOK {
		t.Fatalf("audit: exit %d, %s", code, errOut)
	}
	for _, action := range []string{"config.dispatcher.set", "config.worker.set", "config.worker.unset"} {
		if strings.Count(out, `"action":"`+action+`"`) != 1 {
			t.Errorf("audit trail has not one %s:\n%s", action, out)
		}
	}
}
