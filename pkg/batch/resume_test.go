package batch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/batch"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// TestResumeQueuesNothingTwice kills a submission part-way (its context ends
// after some lines) and runs it again: every line ends up queued exactly
// once, and the second run publishes only the jobs that are missing, so it
// does not lean on JetStream's duplicate window (2 minutes), which a resume
// may come after. The hard cases lose the progress records, as a SIGKILL
// would.
func TestResumeQueuesNothingTwice(t *testing.T) {
	tests := []struct {
		name string
		// hard rolls the record back to its first checkpoint; orphan adds a
		// marker without its job, as a kill between the two publishes leaves.
		hard, orphan bool
	}{
		{name: "progress recorded"},
		{name: "progress records lost", hard: true},
		{name: "killed between marker and job", hard: true, orphan: true},
	}
	const lines, killAfter = 1500, 1000
	src := source(generateLines(lines))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, c := queueOnly(t)
			ctx, kill := context.WithCancel(t.Context())
			defer kill()
			_, err := c.Submit(ctx, killAfterLines(src, killAfter, kill), batch.SubmitOptions{})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("killed Submit returned %v, want context.Canceled", err)
			}
			id := batchID(t, c)
			rec, err := c.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != batch.Submitting || rec.Submitted < killAfter-300 || rec.Submitted > killAfter {
				t.Fatalf("after the kill the record is %s with %d submitted; want submitting, about %d", rec.State, rec.Submitted, killAfter)
			}
			if tt.hard {
				// No progress record after the first reached the bucket.
				rollBack(t, q, rec, 1)
			}
			if tt.orphan {
				orphanMarker(t, q, id, rec.NextLine+7, generateLines(lines))
			}
			before := storedJobs(t, q)
			if before < killAfter-300 || before > killAfter {
				t.Fatalf("%d jobs queued before the resume, want about %d", before, killAfter)
			}

			sub := submit(t, c, src, batch.SubmitOptions{})
			if sub.Created || sub.Record.State != batch.Queued || sub.Record.Submitted != lines {
				t.Fatalf("resume: created %v, state %s, submitted %d; want the same batch, queued, %d", sub.Created, sub.Record.State, sub.Record.Submitted, lines)
			}
			if sub.Queued != lines-before {
				t.Errorf("the resume published %d jobs; want the %d missing ones", sub.Queued, lines-before)
			}
			jobs := queuedJobs(t, q)
			if len(jobs) != lines {
				t.Errorf("%d distinct jobs queued, want %d", len(jobs), lines)
			}
			for id, n := range jobs {
				if n != 1 {
					t.Errorf("job %s queued %d times", id, n)
				}
			}
			// Once more, complete: nothing to do.
			again := submit(t, c, src, batch.SubmitOptions{})
			if again.Queued != 0 || storedJobs(t, q) != lines {
				t.Errorf("a third submission queued %d jobs", again.Queued)
			}
		})
	}
}

// killAfterLines returns src whose second reading (the submission's) calls
// kill once it has given n lines, as a CLI killed there.
func killAfterLines(src batch.Source, n int, kill func()) batch.Source {
	opens := 0
	return func() (io.ReadCloser, error) {
		r, err := src()
		if opens++; opens < 2 || err != nil {
			return r, err
		}
		return &lineKiller{r: r, left: n, kill: kill}, nil
	}
}

type lineKiller struct {
	r    io.ReadCloser
	left int
	kill func()
}

func (k *lineKiller) Read(p []byte) (int, error) {
	if k.left <= 0 {
		k.kill()
		return 0, io.EOF // Ends the reading for good; the canceled context ends the submission.
	}
	n, err := k.r.Read(p[:min(len(p), 64)])
	k.left -= bytes.Count(p[:n], []byte("\n"))
	return n, err
}

func (k *lineKiller) Close() error { return k.r.Close() }

// storedJobs counts the batch jobs in the job stream.
func storedJobs(t *testing.T, q *queue.Queue) int {
	t.Helper()
	s, err := q.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter("ollamaq.jobs.*.batch.*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// batchID returns the ID of the only batch.
func batchID(t *testing.T, c *batch.Client) string {
	t.Helper()
	all, err := c.List(t.Context())
	if err != nil || len(all) != 1 {
		t.Fatalf("List = %d batches, %v; want 1", len(all), err)
	}
	return all[0].ID
}

// rollBack rewrites the record as an earlier checkpoint had it: every line
// before nextLine queued. Reserved stays: it was written before any line
// after it was queued.
func rollBack(t *testing.T, q *queue.Queue, rec *batch.Record, nextLine int) {
	t.Helper()
	old := *rec
	old.NextLine, old.Submitted = nextLine, nextLine-1
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Batches().Put(t.Context(), rec.ID, b); err != nil {
		t.Fatal(err)
	}
}

// orphanMarker stores the queued marker of line n without its job.
func orphanMarker(t *testing.T, q *queue.Queue, id string, n int, lines []string) {
	t.Helper()
	var in struct {
		CustomID string `json:"custom_id"`
	}
	if err := json.Unmarshal([]byte(lines[n-1]), &in); err != nil {
		t.Fatal(err)
	}
	jid := batch.JobID(id, in.CustomID)
	if queuedJobs(t, q)[jid] != 0 {
		t.Fatalf("line %d is queued already; pick a later one", n)
	}
	m := nats.NewMsg(batch.ReplySubject(id, jid))
	m.Header.Set(job.HeaderKind, string(batch.KindQueued))
	m.Header.Set(job.HeaderJob, jid)
	m.Header.Set(job.HeaderAttempt, "0")
	m.Header.Set(job.HeaderSeq, "0")
	m.Data, _ = json.Marshal(map[string]any{"custom_id": in.CustomID, "line": n})
	if _, err := q.JetStream().PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}
