package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/natstest"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestConnection covers where the connection comes from (flags, environment,
// nats contexts) and how a failure to connect is reported: one sentence and
// exit status 3.
func TestConnection(t *testing.T) {
	b := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	empty := natstest.Start(t) // A NATS server without the queue.
	url := b.ClientURL()

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		contexts map[string]string // name -> JSON
		selected string            // context.txt
		wantCode int
		wantErr  string
	}{
		{name: "server flag", args: []string{"--server", url}, wantCode: exitOK},
		{name: "server flag after the command", args: []string{"nodes", "--server", url}, wantCode: exitOK},
		{name: "NATS_URL", env: map[string]string{"NATS_URL": url}, wantCode: exitOK},
		{name: "selected nats context", contexts: map[string]string{"prod": `{"url":"` + url + `"}`}, selected: "prod", wantCode: exitOK},
		{name: "context flag", args: []string{"--context", "prod"}, contexts: map[string]string{"prod": `{"url":"` + url + `"}`}, wantCode: exitOK},
		{name: "NATS_CONTEXT", env: map[string]string{"NATS_CONTEXT": "prod"}, contexts: map[string]string{"prod": `{"url":"` + url + `"}`},
			selected: "other", wantCode: exitOK},
		{name: "flag over context", args: []string{"--server", "nats://127.0.0.1:1"}, contexts: map[string]string{"prod": `{"url":"` + url + `"}`},
			selected: "prod", wantCode: exitConnect, wantErr: "cannot reach NATS at nats://127.0.0.1:1"},
		{name: "unreachable", args: []string{"--server", "nats://127.0.0.1:1"}, wantCode: exitConnect,
			wantErr: "cannot reach NATS at nats://127.0.0.1:1 (is the server running, and is that its address?)"},
		{name: "missing context", args: []string{"--context", "nope"}, wantCode: exitConnect, wantErr: `nats context "nope" does not exist`},
		{name: "broken context", args: []string{"--context", "bad"}, contexts: map[string]string{"bad": `{"url":`}, wantCode: exitConnect,
			wantErr: `nats context "bad"`},
		{name: "missing credentials", args: []string{"--server", url, "--creds", "/nonexistent.creds"}, wantCode: exitConnect,
			wantErr: "credentials file /nonexistent.creds cannot be read: no such file or directory"},
		{name: "credentials from a context", contexts: map[string]string{"c": `{"url":"` + url + `","creds":"~/missing.creds"}`}, selected: "c",
			wantCode: exitConnect, wantErr: "missing.creds cannot be read"},
		{name: "half a client certificate", args: []string{"--server", url, "--tlscert", "/x.pem"}, wantCode: exitConnect,
			wantErr: "needs both --tlscert and --tlskey"},
		{name: "no queue there", args: []string{"--server", empty.ClientURL()}, wantCode: exitConnect,
			wantErr: "no OllamaMax queue on this NATS server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, "")
			for k, v := range tt.env {
				c.vars[k] = v
			}
			dir := filepath.Join(c.vars["HOME"], ".config", "nats")
			for name, body := range tt.contexts {
				writeFile(t, filepath.Join(dir, "context", name+".json"), body)
			}
			if tt.selected != "" {
				writeFile(t, filepath.Join(dir, "context.txt"), tt.selected+"\n")
			}
			args := tt.args
			if len(args) == 0 || args[0] != "nodes" {
				args = append(args, "nodes")
			}
			code, _, errOut := c.runIn(t.Context(), "", args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d with %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if code == exitConnect && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("a connection failure took more than one line:\n%s", errOut)
			}
		})
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
