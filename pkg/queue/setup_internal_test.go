package queue

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestCovers(t *testing.T) {
	want := jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>"}, MaxAge: time.Hour}
	have := want
	have.Duplicates = 2 * time.Minute // A server default that want leaves out.
	if ok, err := covers(have, want); !ok || err != nil {
		t.Errorf("covers(server copy, want) = %v, %v; want true", ok, err)
	}
	changed := have
	changed.MaxAge = time.Minute
	if ok, _ := covers(changed, want); ok {
		t.Error("covers ignored a changed MaxAge")
	}
}

// TestStreamsAreBounded: what any publisher can fill has a size bound, and
// the job stream refuses new jobs rather than dropping queued ones.
func TestStreamsAreBounded(t *testing.T) {
	for _, tt := range []struct {
		file    string
		discard jetstream.DiscardPolicy
	}{{"jobs.json", jetstream.DiscardNew}, {"dlq.json", jetstream.DiscardOld}, {"advisories.json", jetstream.DiscardOld}} {
		var cfg jetstream.StreamConfig
		if err := readDefinition(tt.file, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.MaxBytes <= 0 || cfg.Discard != tt.discard {
			t.Errorf("streams/%s: max_bytes %d, discard %v; want a bound and %v", tt.file, cfg.MaxBytes, cfg.Discard, tt.discard)
		}
	}
}
