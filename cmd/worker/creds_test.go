package main

import (
	"path/filepath"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/worker"
)

// TestUseCreds checks that worker credentials name the worker: their name
// is the default ID, and another --id is refused before anything starts;
// the worker role may not manage streams, so the worker only binds them.
func TestUseCreds(t *testing.T) {
	d, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]auth.Role{"gpu7": auth.Worker, "root": auth.Admin} {
		if _, _, err := d.AddUser(name, auth.UserOptions{Role: r, CredsFile: d.CredsPath(name)}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, creds, id string
		wantID          string
		wantErr         bool
		wantBindOnly    bool
	}{
		{name: "ID from the credentials", creds: d.CredsPath("gpu7"), wantID: "gpu7", wantBindOnly: true},
		{name: "the same ID given", creds: d.CredsPath("gpu7"), id: "gpu7", wantID: "gpu7", wantBindOnly: true},
		{name: "an admin's credentials", creds: d.CredsPath("root"), wantID: "root"},
		{name: "another ID given", creds: d.CredsPath("gpu7"), id: "gpu8", wantErr: true},
		{name: "credentials bound to no name", creds: d.CredsPath(auth.SysUser), id: "x", wantID: "x"},
		{name: "no such file", creds: filepath.Join(t.TempDir(), "nope.creds"), wantErr: true},
	}
	for _, tt := range tests {
		cfg := worker.DefaultConfig("", nil)
		cfg.ID = tt.id
		err := useCreds(&cfg, tt.creds)
		if (err != nil) != tt.wantErr || (err == nil && cfg.ID != tt.wantID) {
			t.Errorf("%s: ID %q, err %v; want ID %q, error %v", tt.name, cfg.ID, err, tt.wantID, tt.wantErr)
		}
		if err == nil && cfg.Queue.BindOnly != tt.wantBindOnly {
			t.Errorf("%s: BindOnly %v, want %v", tt.name, cfg.Queue.BindOnly, tt.wantBindOnly)
		}
		if err == nil && len(cfg.NATSOptions) == 0 {
			t.Errorf("%s: no connection options", tt.name)
		}
	}
}
