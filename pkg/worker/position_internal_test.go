package worker

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/prometheus/client_golang/prometheus"
)

// reporter says this worker reports every queue, and notReporter that
// another does.
func reporter(string) (mine, known bool)    { return true, true }
func notReporter(string) (mine, known bool) { return false, true }

// doorbell is the stream's header-only republish of job id of requester,
// stored at seq.
func doorbell(seq uint64, requester, id string, stored time.Time) *nats.Msg {
	m := nats.NewMsg(job.QueuedSubject("llama3.2:latest", job.Interactive, requester))
	m.Header.Set(jetstream.StreamHeader, job.Stream)
	m.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(seq, 10))
	m.Header.Set("Nats-Time-Stamp", stored.UTC().Format(time.RFC3339Nano))
	m.Header.Set(job.HeaderJob, id)
	m.Header.Set(job.HeaderReply, job.ReplySubject(requester, id))
	m.Header.Set(job.HeaderPositions, "1")
	return m
}

// TestWaitingIsBounded: past its bound a worker notes no more jobs, and
// those it did note keep their places; a canceled job is forgotten, and a
// doorbell that names no stored job is not noted.
func TestWaitingIsBounded(t *testing.T) {
	now := time.Now()
	wt := newWaiting(prometheus.NewRegistry(), 3)
	for i := range uint64(5) {
		wt.ring(doorbell(10+i, "alice", "j"+strconv.Itoa(int(i)), now.Add(-2*time.Second)), now)
	}
	if n := wt.count(); n != 3 {
		t.Fatalf("noted %d jobs, want the bound, 3", n)
	}
	nak := nats.NewMsg(job.QueuedSubject("llama3.2:latest", job.Interactive, "alice")) // A dispatcher's ring after a NAK.
	wt.cancel("alice", "j0")
	wt.ring(nak, now)
	if n := wt.count(); n != 2 {
		t.Fatalf("noted %d jobs, want 2: a canceled one forgotten, a ring that names no stored job left out", n)
	}
	if look := wt.due(now, map[string]bool{"llama3.2:latest": true}); len(look) != 1 {
		t.Fatalf("due = %v; want the model", look)
	}
	// The consumer delivered seq 11 (j1) and holds 4 more: j2, and the two
	// beyond the bound, which are behind it; so no unknown job counts as
	// ahead of those it knows.
	info := &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: 11, Consumer: 2}, NumPending: 3}
	reps := wt.update("llama3.2:latest", info, now, reporter, 10, "w0")
	if len(reps) != 1 || reps[0].rep.Job != "j2" || reps[0].rep.Position != 1 || reps[0].reply != job.ReplySubject("alice", "j2") {
		t.Fatalf("reports %+v, want j2 at position 1", reps)
	}
	if n := wt.count(); n != 1 {
		t.Errorf("noted %d jobs after the look, want 1: the delivered one forgotten", n)
	}
	if again := wt.update("llama3.2:latest", info, now.Add(100*time.Millisecond), reporter, 10, "w0"); len(again) != 0 {
		t.Errorf("reported again after 100ms: %+v", again)
	}
}

// TestUnknownJobsAreAhead: jobs the consumer holds that no doorbell told
// of (they were stored before this worker listened) count as ahead of
// every job it knows; ETAs follow the measured delivery rate.
func TestUnknownJobsAreAhead(t *testing.T) {
	now := time.Now()
	wt := newWaiting(prometheus.NewRegistry(), 100)
	wt.ring(doorbell(50, "alice", "a", now.Add(-3*time.Second)), now)
	wt.ring(doorbell(51, "alice", "b", now.Add(-3*time.Second)), now)
	info := &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: 40, Consumer: 10}, NumPending: 5}
	reps := wt.update("llama3.2:latest", info, now.Add(-2*time.Second), notReporter, 10, "w0") // A look of a worker that does not report.
	if len(reps) != 0 {
		t.Fatalf("a worker that does not report sent %+v", reps)
	}
	info.Delivered.Consumer = 14 // 4 deliveries in 2 s.
	reps = wt.update("llama3.2:latest", info, now, reporter, 10, "w0")
	got := map[string]job.Reply{}
	for _, r := range reps {
		got[r.rep.Job] = r.rep
	}
	if got["a"].Position != 4 || got["b"].Position != 5 {
		t.Fatalf("positions %+v, want a 4 and b 5 behind 3 unknown jobs", got)
	}
	if got["a"].ETA != 2*time.Second || got["b"].ETA != 2500*time.Millisecond {
		t.Errorf("ETAs %s, %s; want 2s and 2.5s at 2 deliveries a second", got["a"].ETA, got["b"].ETA)
	}
}

// BenchmarkReporterLook measures one look of the reporter at a model's
// queue holding the bound's worth of noted jobs: forgetting the delivered,
// ranking the rest and making the reports (sending them is NATS's cost).
func BenchmarkReporterLook(b *testing.B) {
	now := time.Now()
	wt := newWaiting(prometheus.NewRegistry(), maxWaiting)
	for i := range uint64(maxWaiting) {
		wt.ring(doorbell(100+i, "alice", "j"+strconv.Itoa(int(i)), now.Add(-time.Minute)), now)
	}
	info := &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: 99, Consumer: 1}, NumPending: maxWaiting}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		at := now.Add(time.Duration(i) * positionEvery)
		info.Delivered.Consumer++
		if reps := wt.update("llama3.2:latest", info, at, reporter, reportBudget, "w0"); len(reps) != reportBudget {
			b.Fatalf("%d reports, want %d", len(reps), reportBudget)
		}
	}
}

// TestTakenJobsNeedNoLook: jobs up to the last one this worker pulled of
// the same interactive queue were delivered, so they are forgotten without
// a look at the consumer; a batch pull says nothing of them.
func TestTakenJobsNeedNoLook(t *testing.T) {
	now := time.Now()
	wt := newWaiting(prometheus.NewRegistry(), 100)
	wt.ring(doorbell(7, "alice", "a", now.Add(-2*time.Second)), now)
	wt.ring(doorbell(9, "alice", "b", now.Add(-2*time.Second)), now)
	served := map[string]bool{"llama3.2:latest": true}
	wt.taken(job.JobSubject("llama3.2:latest", job.Batch, "batch"), 20)
	if look := wt.due(now, served); len(look) != 1 || wt.count() != 2 {
		t.Fatalf("after a batch pull: due %v with %d noted, want a look at both", look, wt.count())
	}
	wt.taken(job.JobSubject("llama3.2:latest", job.Interactive, "bob"), 8)
	wt.due(now, served)
	if n := wt.count(); n != 1 {
		t.Fatalf("%d noted after pulling seq 8, want 1 (seq 9)", n)
	}
	wt.taken(job.JobSubject("llama3.2:latest", job.Interactive, "bob"), 9)
	if look := wt.due(now, served); len(look) != 0 || wt.count() != 0 {
		t.Fatalf("due %v with %d noted after pulling seq 9, want nothing", look, wt.count())
	}
}

// TestJobsThatAskNoReportsKeepTheirPlace: a job whose requester asked for
// no reports, or whose reply subject is another requester's, gets none, but
// counts in the positions of the jobs behind it; a job that forges its own
// stream sequence is noted at the one the stream gave it.
func TestJobsThatAskNoReportsKeepTheirPlace(t *testing.T) {
	now := time.Now()
	wt := newWaiting(prometheus.NewRegistry(), 100)
	unasked := doorbell(5, "old", "u", now.Add(-2*time.Second))
	unasked.Header.Del(job.HeaderPositions) // A requester that predates queued replies.
	forged := doorbell(6, "alice", "x", now.Add(-2*time.Second))
	forged.Header.Set(job.HeaderReply, job.ReplySubject("bob", "x"))
	// A job's own Nats-Sequence comes before the one the stream appends.
	a := doorbell(7, "alice", "a", now.Add(-2*time.Second))
	a.Header[jetstream.SequenceHeader] = []string{"1", "7"}
	for _, m := range []*nats.Msg{unasked, forged, a} {
		wt.ring(m, now)
	}
	info := &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: 4, Consumer: 1}, NumPending: 3}
	reps := wt.update("llama3.2:latest", info, now, reporter, 10, "w0")
	if len(reps) != 1 || reps[0].rep.Job != "a" || reps[0].rep.Position != 3 || reps[0].reply != job.ReplySubject("alice", "a") {
		t.Fatalf("reports %+v, want only a, at position 3", reps)
	}
}
