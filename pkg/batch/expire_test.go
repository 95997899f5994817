package batch_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/batch"
)

// TestLinesNobodyServesExpireWithTheWindow submits a batch whose window is
// two seconds: the lines a worker serves are answered, the lines for a model
// nobody serves wait until the window ends, then get batch_expired, their
// jobs leave the queue and the batch is expired.
func TestLinesNobodyServesExpireWithTheWindow(t *testing.T) {
	f, c := fleet(t, fleettest.Options{Workers: 1, Sim: fastSim(2)})
	lines := generateLines(2)
	for i := range 2 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"nobody-%d","url":"/api/generate","body":{"model":"nobody-serves","prompt":"%d"}}`, i, i))
	}
	const id = "expiring"
	sub := submit(t, c, source(lines), batch.SubmitOptions{ID: id, CompletionWindow: 2 * time.Second})
	if got := sub.Record.CompletionWindow; got != "2s" || !sub.Record.ExpiresAt.Equal(sub.Record.CreatedAt.Add(2*time.Second)) {
		t.Fatalf("record window %q, expires %v (created %v); want 2s after creation", got, sub.Record.ExpiresAt, sub.Record.CreatedAt)
	}

	st := wait(t, c, id, 20*time.Second)
	if st.State != batch.Expired || st.Done != 2 || st.Expired != 2 || st.Queued != 0 || st.ExpiredAt == nil {
		t.Fatalf("status %+v; want expired with 2 done and 2 expired", st)
	}
	got, st := results(t, c, id)
	if st.State != batch.Expired || len(got) != 4 {
		t.Fatalf("%d results, state %s; want 4, expired", len(got), st.State)
	}
	for i := range 2 {
		if r := got[fmt.Sprintf("req-%d", i)]; r == nil || r.Error != nil || r.Response.StatusCode != 200 {
			t.Errorf("req-%d: %+v, want answered", i, r)
		}
		r := got[fmt.Sprintf("nobody-%d", i)]
		if r == nil || r.Response != nil || r.Error == nil || r.Error.Code != "batch_expired" {
			t.Fatalf("nobody-%d: %+v; want no response and the error batch_expired", i, r)
		}
	}
	fleettest.WaitFor(t, 5*time.Second, "the expired lines' jobs to leave the queue", func() bool { return len(queuedJobs(t, f.Queue)) == 0 })

	// The record keeps the outcome; what cannot be done to an expired batch.
	rec, err := c.Get(t.Context(), id)
	if err != nil || rec.State != batch.Expired || rec.Final == nil || rec.Final.Expired != 2 {
		t.Fatalf("record %+v, %v; want expired with its final counts", rec, err)
	}
	if _, err := c.Cancel(t.Context(), id, 0); !errors.Is(err, batch.ErrFinished) {
		t.Errorf("Cancel: %v, want ErrFinished", err)
	}
	if _, err := c.Submit(t.Context(), source(lines), batch.SubmitOptions{ID: id}); !errors.Is(err, batch.ErrExpired) {
		t.Errorf("Submit again: %v, want ErrExpired", err)
	}
}

// TestExpiryStopsRunningLines: a line still running when the window ends is
// stopped on its worker, and its result is batch_expired, not the
// cancellation its worker answers.
func TestExpiryStopsRunningLines(t *testing.T) {
	f, c := fleet(t, fleettest.Options{Workers: 1, Slots: 1, Sim: slowSim(30*time.Second, 1)})
	const id = "running-late"
	submit(t, c, source(generateLines(2)), batch.SubmitOptions{ID: id, CompletionWindow: time.Second})
	st := wait(t, c, id, 20*time.Second)
	if st.State != batch.Expired || st.Expired != 2 || st.Canceled != 0 {
		t.Fatalf("status %+v; want both lines expired", st)
	}
	f.WaitFor("the running line to stop on Ollama", func() bool { return f.Sims[0].Stats().Active == 0 })
	got, _ := results(t, c, id)
	for _, r := range got {
		if r.Error == nil || r.Error.Code != "batch_expired" {
			t.Errorf("%s: %+v, want batch_expired", r.CustomID, r.Error)
		}
	}
	if n := f.Sims[0].Stats().Canceled; n != 1 {
		t.Errorf("Ollama saw %d requests canceled, want the 1 running", n)
	}
}

// TestWindowFromTheFile: the lines' completion_window is the batch's unless
// the submitter sets one; lines that disagree are refused.
func TestWindowFromTheFile(t *testing.T) {
	_, c := queueOnly(t)
	line := func(id, window string) string {
		return fmt.Sprintf(`{"custom_id":%q,"completion_window":%q,"url":"/api/generate","body":{"model":"llama3.2"}}`, id, window)
	}
	tests := []struct {
		name    string
		lines   []string
		opt     time.Duration
		want    string
		wantErr error
	}{
		{"default", generateLines(1), 0, "24h", nil},
		{"the file's", []string{line("a", "1h"), line("b", "1h")}, 0, "1h", nil},
		{"the submitter's over the file's", []string{line("a", "1h")}, 5 * time.Minute, "5m", nil},
		{"lines disagree", []string{line("a", "1h"), line("b", "2h")}, 0, "", batch.ErrWindows},
		{"lines disagree, the submitter decides", []string{line("a", "1h"), line("b", "2h")}, 3 * time.Hour, "3h", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := c.Submit(t.Context(), source(tt.lines), batch.SubmitOptions{ID: fmt.Sprintf("w%d", i), CompletionWindow: tt.opt})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Submit: %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := sub.Record.CompletionWindow; got != tt.want {
				t.Errorf("window %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := c.Submit(t.Context(), source(generateLines(1)), batch.SubmitOptions{CompletionWindow: 200 * time.Hour}); err == nil {
		t.Error("Submit with a 200h window: no error")
	}
}
