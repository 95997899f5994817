package queue

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// rep is a worker's reply of attempt a, number s.
func rep(kind job.Kind, a, s int, data string) job.Reply {
	return job.Reply{Kind: kind, Job: "j", Attempt: a, Seq: s, Data: []byte(data)}
}

func TestStreamPush(t *testing.T) {
	big := strings.Repeat("x", MaxBuffered/2+1)
	tests := []struct {
		name string
		in   []job.Reply
		// want is what Next returns, one "kind attempt seq data" per reply;
		// a local error is "local" and the start of its message.
		want []string
	}{
		{"in order",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindData, 1, 2, "a"), rep(job.KindData, 1, 3, "b"), rep(job.KindDone, 1, 4, "")},
			[]string{"start 1 1 ", "data 1 2 a", "data 1 3 b", "done 1 4 "}},
		{"gap ends the stream",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindData, 1, 3, "b"), rep(job.KindData, 1, 4, "c")},
			[]string{"start 1 1 ", "local lost reply messages 2 to 2 of attempt 1"}},
		{"old attempt dropped",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindStart, 2, 1, ""), rep(job.KindData, 1, 2, "old"), rep(job.KindData, 2, 2, "new")},
			[]string{"start 1 1 ", "start 2 1 ", "data 2 2 new"}},
		{"new attempt starts its own numbering",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindData, 1, 2, "a"), rep(job.KindStart, 3, 1, ""), rep(job.KindDone, 3, 2, "")},
			[]string{"start 1 1 ", "data 1 2 a", "start 3 1 ", "done 3 2 "}},
		{"reaper error out of order ends it",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindError, 4, job.SeqFinal, "reaped"), rep(job.KindData, 4, 2, "late")},
			[]string{"start 1 1 ", "error 4 1073741824 reaped"}},
		{"local error ends it",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), localError("malformed reply from worker"), rep(job.KindData, 1, 2, "a")},
			[]string{"start 1 1 ", "local malformed reply from worker"}},
		{"nothing after done",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindDone, 1, 2, ""), rep(job.KindData, 1, 3, "x"), rep(job.KindStart, 2, 1, "")},
			[]string{"start 1 1 ", "done 1 2 "}},
		{"too much waiting ends it",
			[]job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindData, 1, 2, big), rep(job.KindData, 1, 3, big), rep(job.KindData, 1, 4, "c")},
			[]string{"start 1 1 ", "data 1 2 " + big, "local the client is not reading the response"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Stream{id: "j", notify: make(chan struct{}, 1)}
			for _, r := range tt.in {
				s.push(r)
			}
			var got []string
			for _, r := range s.buf {
				if IsLocal(r) {
					got = append(got, "local "+r.Error)
					continue
				}
				got = append(got, string(r.Kind)+" "+strconv.Itoa(r.Attempt)+" "+strconv.Itoa(r.Seq)+" "+string(r.Data))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d replies %.80q, want %d %.80q", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) || !strings.HasPrefix(tt.want[i], "local") && got[i] != tt.want[i] {
					t.Errorf("reply %d = %.80q, want %.80q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestStreamFreezeDropsEarlierAttempts(t *testing.T) {
	s := &Stream{id: "j", notify: make(chan struct{}, 1)}
	s.push(rep(job.KindStart, 1, 1, ""))
	s.push(rep(job.KindData, 1, 2, `{"response":"he"}`+"\n"))
	p := s.freeze(2)
	if p.Gone || p.Frames != 1 || p.Text != "he" {
		t.Fatalf("freeze = %+v, want 1 frame of text he", p)
	}
	s.push(rep(job.KindData, 1, 3, `{"response":"llo"}`+"\n")) // The dead worker's last words.
	if n := len(s.buf); n != 2 {
		t.Fatalf("a reply of the superseded attempt was kept: %d replies", n)
	}
	s.push(rep(job.KindDone, 1, 4, ""))
	if p := s.freeze(3); p.Gone {
		t.Fatal("an attempt-1 done after a freeze for attempt 2 ended the stream")
	}
}

// FuzzStreamPush feeds arbitrary replies to a stream and checks what the
// relay relies on: nothing follows an end, an attempt never goes back, and
// the buffer stays bounded.
func FuzzStreamPush(f *testing.F) {
	f.Add([]byte{0, 1, 1, 1, 1, 2, 2, 1, 3})
	f.Add([]byte{0, 1, 1, 1, 2, 3, 3, 1, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		s := &Stream{id: "j", notify: make(chan struct{}, 1)}
		kinds := []job.Kind{job.KindStart, job.KindData, job.KindDone, job.KindError}
		for i := 0; i+2 < len(prog); i += 3 {
			seq := int(prog[i+2])
			if seq == 255 {
				seq = job.SeqFinal
			}
			r := rep(kinds[prog[i]%4], int(prog[i+1]%8)+1, seq, strings.Repeat("d", int(prog[i])))
			if prog[i+1] >= 250 {
				r = localError("local")
			}
			s.push(r)
		}
		attempt, ended, size := 0, false, 0
		for _, r := range s.buf {
			if ended {
				t.Fatalf("a reply after the end: %+v", r)
			}
			if r.Attempt < attempt {
				t.Fatalf("attempt went back from %d to %d", attempt, r.Attempt)
			}
			attempt = r.Attempt
			ended = r.Kind == job.KindDone || r.Kind == job.KindError
			size += len(r.Data)
		}
		if size != s.buffered || size > MaxBuffered+1024 {
			t.Fatalf("buffered %d, counted %d", s.buffered, size)
		}
	})
}

func TestFollowBounds(t *testing.T) {
	tests := []struct {
		name    string
		in      []job.Reply
		wantErr error
		seen    int
	}{
		{"never started", nil, ErrNotStarted, 0},
		{"started, then silent", []job.Reply{rep(job.KindStart, 1, 1, "")}, ErrSilent, 1},
		{"started and finished", []job.Reply{rep(job.KindStart, 1, 1, ""), rep(job.KindData, 1, 2, "x"), rep(job.KindDone, 1, 3, "")}, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Stream{id: "j", notify: make(chan struct{}, 1)}
			for _, r := range tt.in {
				s.push(r)
			}
			seen := 0
			err := s.Follow(t.Context(), 50*time.Millisecond, 50*time.Millisecond, func(r job.Reply) bool {
				seen++
				return r.Kind != job.KindDone
			})
			if !errors.Is(err, tt.wantErr) && err != tt.wantErr || seen != tt.seen {
				t.Fatalf("Follow = %v after %d replies, want %v after %d", err, seen, tt.wantErr, tt.seen)
			}
		})
	}
}
