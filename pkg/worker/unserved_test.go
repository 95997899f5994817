package worker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// queuedOn returns how many jobs the stream holds on the subjects filter matches.
func queuedOn(t *testing.T, f *fleettest.Fleet, filter string) uint64 {
	t.Helper()
	s, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// TestJobsOfUnservedModelsAreAnsweredAsOverHTTP queues jobs the way a
// NATS-native client can: for a model no worker ever served, the worker
// answers an interactive or async job 404 with Ollama's message and removes the job, as the dispatcher
// refuses such a request over HTTP. Jobs of a model that was served once
// (its worker is away) and batch jobs wait, as they do over HTTP and in
// batches.
func TestJobsOfUnservedModelsAreAnsweredAsOverHTTP(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	queueJob := func(model string, class job.Class, body string) *queue.Stream {
		t.Helper()
		st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: model, Class: class, Route: "/api/generate", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	// phi3 was served once: a worker created its consumers.
	if _, err := f.Queue.Consumer(t.Context(), "phi3:latest", job.Interactive); err != nil {
		t.Fatal(err)
	}
	queueJob("phi3:latest", job.Interactive, `{"model":"phi3","prompt":"wait for a worker"}`)
	queueJob("no-such-model:latest", job.Batch, `{"model":"no-such-model","prompt":"wait for the window"}`)

	tests := []struct {
		name, body string
		wantError  string
	}{
		{"unknown model", `{"model":"no-such-model","prompt":"hi"}`, "model 'no-such-model' not found"},
		{"named as the request spells it", `{"model":"No-Such-Model:latest","prompt":"hi"}`, "model 'No-Such-Model:latest' not found"},
		{"body that is not JSON", `not json`, "model 'no-such-model:latest' not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			rep := finish(t, queueJob("no-such-model:latest", job.Interactive, tt.body))
			if rep.Kind != job.KindError || rep.Status != 404 || rep.Error != tt.wantError || rep.Attempt != 1 || rep.Seq != 1 ||
				string(rep.Data) != string(job.ErrorBody(tt.wantError)) {
				t.Fatalf("got %s %d %q (attempt %d, seq %d, body %s); want error 404 %q, attempt 1, seq 1",
					rep.Kind, rep.Status, rep.Error, rep.Attempt, rep.Seq, rep.Data, tt.wantError)
			}
			if got := queuedOn(t, f, job.JobFilter("no-such-model:latest", job.Interactive)); got != 0 {
				t.Errorf("%d jobs left on the unserved subject after the answer, want 0", got)
			}
			t.Logf("answered after %s", time.Since(start).Round(time.Millisecond))
		})
	}

	// An async job of an unserved model is answered as an interactive one.
	rep := finish(t, queueJob("no-such-model:latest", job.Async, `{"model":"no-such-model","prompt":"later"}`))
	if rep.Kind != job.KindError || rep.Status != 404 || rep.Error != "model 'no-such-model' not found" {
		t.Errorf("async job of an unserved model: %s %d %q, want error 404", rep.Kind, rep.Status, rep.Error)
	}

	// A subject whose model token is no canonical name can never be served:
	// 400, and a dead letter.
	const subject = "ollamaq.jobs.No-Such.interactive.raw"
	reply := "ollamaq.reply.raw.j1"
	sub, err := f.NC.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(subject)
	m.Header.Set(job.HeaderJob, "j1")
	m.Header.Set(job.HeaderRoute, "/api/generate")
	m.Header.Set(job.HeaderReply, reply)
	m.Data = []byte(`{"model":"No-Such","prompt":"hi"}`)
	if _, err := f.Queue.JetStream().PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	got, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Get(job.HeaderKind) != "error" || got.Header.Get(job.HeaderStatus) != "400" {
		t.Fatalf("job on %s answered %v, want error 400", subject, got.Header)
	}
	if dl := deadLetters(t, f); len(dl) != 1 || dl[0].Subject != subject {
		t.Fatalf("dead letters %+v, want the job on %s", dl, subject)
	}

	// The scans that answered all of that saw the jobs that must wait.
	for _, subject := range []string{job.JobFilter("phi3:latest", job.Interactive), job.JobFilter("no-such-model:latest", job.Batch)} {
		if got := queuedOn(t, f, subject); got != 1 {
			t.Errorf("%d jobs on %s, want the 1 queued: it waits", got, subject)
		}
	}
}
