package main

import (
	"path/filepath"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
)

// TestUseCreds checks that dispatcher credentials name the requester: their
// name is the ID unless --id was given, and a different --id is refused.
func TestUseCreds(t *testing.T) {
	d, err := auth.Init(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	creds := d.CredsPath(auth.DispatcherUser)
	tests := []struct {
		name, creds, id string
		idGiven         bool
		wantID          string
		wantErr         bool
	}{
		{name: "ID from the credentials", creds: creds, id: "d0123456789", wantID: auth.DispatcherUser},
		{name: "the same ID given", creds: creds, id: auth.DispatcherUser, idGiven: true, wantID: auth.DispatcherUser},
		{name: "another ID given", creds: creds, id: "d2", idGiven: true, wantErr: true},
		{name: "credentials bound to no name", creds: d.CredsPath(auth.SysUser), id: "d2", idGiven: true, wantID: "d2"},
		{name: "no such file", creds: filepath.Join(t.TempDir(), "nope.creds"), wantErr: true},
	}
	for _, tt := range tests {
		cfg := dispatcher.DefaultConfig(t.TempDir())
		cfg.ID = tt.id
		err := useCreds(&cfg, tt.creds, tt.idGiven)
		if (err != nil) != tt.wantErr || (err == nil && cfg.ID != tt.wantID) {
			t.Errorf("%s: ID %q, err %v; want ID %q, error %v", tt.name, cfg.ID, err, tt.wantID, tt.wantErr)
		}
	}
}
