package job

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestParseQueuedReply(t *testing.T) {
	tests := []struct {
		name    string
		h       map[string][]string
		want    Reply
		wantErr bool
	}{
		{name: "position and ETA", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"},
			HeaderPosition: {"3"}, HeaderETA: {"4200"}, HeaderWorker: {"w1"}},
			want: Reply{Kind: KindQueued, Job: "j1", Worker: "w1", Position: 3, ETA: 4200 * time.Millisecond}},
		{name: "no ETA measured", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"}, HeaderPosition: {"1"}},
			want: Reply{Kind: KindQueued, Job: "j1", Position: 1}},
		{name: "a batch marker: no position", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"}},
			want: Reply{Kind: KindQueued, Job: "j1"}},
		{name: "an attempt would take a place in its order", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"1"}, HeaderSeq: {"0"}, HeaderPosition: {"1"}}, wantErr: true},
		{name: "a seq would too", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"2"}, HeaderPosition: {"1"}}, wantErr: true},
		{name: "position 0", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"}, HeaderPosition: {"0"}}, wantErr: true},
		{name: "negative ETA", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"}, HeaderPosition: {"1"}, HeaderETA: {"-1"}}, wantErr: true},
		{name: "a status or ack is not carried", h: map[string][]string{HeaderKind: {"queued"}, HeaderJob: {"j1"}, HeaderAttempt: {"0"}, HeaderSeq: {"0"}, HeaderPosition: {"2"},
			HeaderStatus: {"200"}, HeaderAck: {"$JS.API.STREAM.DELETE.OLLAMAQ_JOBS"}}, want: Reply{Kind: KindQueued, Job: "j1", Position: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReply(tt.h, nil)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidReply) {
					t.Fatalf("ParseReply = %+v, %v; want ErrInvalidReply", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseReply = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
