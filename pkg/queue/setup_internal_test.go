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
