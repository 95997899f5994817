package batch

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCompletionWindowOfALine(t *testing.T) {
	const head = `{"custom_id":"a","url":"/api/generate","body":{"model":"m"}`
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr string
	}{
		{"none", head + `}`, 0, ""},
		{"OpenAI's", head + `,"completion_window":"24h"}`, 24 * time.Hour, ""},
		{"seconds", head + `,"completion_window":"5s"}`, 5 * time.Second, ""},
		{"empty is none", head + `,"completion_window":""}`, 0, ""},
		{"not a duration", head + `,"completion_window":"tomorrow"}`, 0, `completion window "tomorrow" is not a duration such as "24h"`},
		{"a number", head + `,"completion_window":86400}`, 0, "completion_window must be a string"},
		{"too short", head + `,"completion_window":"500ms"}`, 0, "completion window 500ms is not between 1s and 168h"},
		{"longer than results are kept", head + `,"completion_window":"169h"}`, 0, "completion window 169h is not between 1s and 168h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseLine(3, []byte(tt.line), 1<<20)
			var le *LineError
			switch {
			case tt.wantErr != "" && (!errors.As(err, &le) || le.Line != 3 || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseLine = %v; want a line 3 error containing %q", err, tt.wantErr)
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseLine: %v", err)
			case req.Window != tt.want:
				t.Errorf("window %s, want %s", req.Window, tt.want)
			}
		})
	}
}

func TestScanFindsTheFilesWindow(t *testing.T) {
	line := func(id, window string) string {
		s := `{"custom_id":"` + id + `","url":"/api/generate","body":{"model":"m"}`
		if window != "" {
			s += `,"completion_window":"` + window + `"`
		}
		return s + "}"
	}
	tests := []struct {
		name         string
		lines        []string
		want         time.Duration
		wantConflict string
	}{
		{"no line asks", []string{line("a", ""), line("b", "")}, 0, ""},
		{"one line asks", []string{line("a", ""), line("b", "1h")}, time.Hour, ""},
		{"all agree", []string{line("a", "1h"), line("b", "60m")}, time.Hour, ""},
		{"two windows", []string{line("a", "1h"), line("b", ""), line("c", "2h")}, time.Hour, `line 3 (custom_id "c"): completion_window 2h differs from line 1's 1h`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := scan(strings.NewReader(strings.Join(tt.lines, "\n")), 1<<20, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if sc.WindowConflict != nil {
				got = sc.WindowConflict.Error()
			}
			if sc.Window != tt.want || got != tt.wantConflict {
				t.Errorf("window %s, conflict %q; want %s, %q", sc.Window, got, tt.want, tt.wantConflict)
			}
		})
	}
}

func TestFormatWindow(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{24 * time.Hour, "24h"}, {90 * time.Minute, "1h30m"}, {5 * time.Second, "5s"}, {time.Hour + time.Second, "1h0m1s"}, {2 * time.Minute, "2m"}} {
		if got := FormatWindow(tt.d); got != tt.want {
			t.Errorf("FormatWindow(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestStatusOfAnExpiringBatch: the record and the results decide the state;
// the window ends a batch that is not done by then.
func TestStatusOfAnExpiringBatch(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	tests := []struct {
		name    string
		state   State
		expires *time.Time
		counts  Counts
		want    State
	}{
		{"running, window open", Queued, &future, Counts{Done: 1, Queued: 1}, Running},
		{"running, window passed", Queued, &past, Counts{Done: 1, Queued: 1}, Expired},
		{"all answered, window passed", Queued, &past, Counts{Done: 2}, Done},
		{"still submitting, window passed", Submitting, &past, Counts{Queued: 1}, Expired},
		{"canceled, window passed", Canceled, &past, Counts{Canceled: 2}, Canceled},
		{"a record from before windows", Queued, nil, Counts{Queued: 2}, Queued},
		{"expired", Expired, &past, Counts{Done: 1, Expired: 1}, Expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Record{ID: "b", State: tt.state, Requests: 2, ExpiresAt: tt.expires}
			if got := statusOf(r, tt.counts, now).State; got != tt.want {
				t.Errorf("state %s, want %s", got, tt.want)
			}
		})
	}
}
