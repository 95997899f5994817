package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestRefused covers a server that refuses ollamaq: credentials it does not
// accept, and a user it accepts without the JetStream permissions ollamaq
// needs. Each is exit status 3 with one sentence that says which.
func TestRefused(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "admin", Password: "s3cret"},
			{Username: "guest", Password: "s3cret", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Deny: []string{"$JS.API.>"}}}},
		}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Setup(t.Context(), js, queue.Options{}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "accepted", args: []string{"--user", "admin", "--password", "s3cret"}, wantCode: exitOK},
		{name: "wrong password", args: []string{"--user", "admin", "--password", "guess"}, wantCode: exitConnect,
			wantErr: "refused the credentials (nats: Authorization Violation)"},
		{name: "no credentials", wantCode: exitConnect, wantErr: "refused the credentials"},
		{name: "no JetStream permission", args: []string{"--user", "guest", "--password", "s3cret", "--timeout", "1s"},
			wantCode: exitConnect, wantErr: `does not permit these credentials what ollamaq needs (nats: permissions violation: Permissions Violation for Publish to "$JS.API.STREAM.INFO.OLLAMAQ_JOBS"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, s.ClientURL())
			code, _, errOut := c.run(append(tt.args, "nodes")...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d with %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if code == exitConnect && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("a refusal took more than one line:\n%s", errOut)
			}
		})
	}
}
