package worker_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// TestJobPastItsDeadlineIsNotRun: a job a worker takes after its
// Ollamaq-Deadline is answered without reaching Ollama: 503, or for a batch
// job, whose deadline is the end of its batch's completion window, 408.
func TestJobPastItsDeadlineIsNotRun(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	tests := []struct {
		name, batch string
		class       job.Class
		wantStatus  int
	}{
		{"interactive", "", job.Interactive, 503},
		{"batch", "nightly", job.Batch, 408},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "late-" + strconv.Itoa(i)
			reply := "ollamaq.reply.raw." + id
			sub, err := f.NC.SubscribeSync(reply)
			if err != nil {
				t.Fatal(err)
			}
			m := nats.NewMsg(job.JobSubject("llama3.2:latest", tt.class, "raw"))
			m.Header.Set(job.HeaderJob, id)
			m.Header.Set(job.HeaderRoute, "/api/generate")
			m.Header.Set(job.HeaderReply, reply)
			m.Header.Set(job.HeaderDeadline, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano))
			if tt.batch != "" {
				m.Header.Set(job.HeaderBatch, tt.batch)
			}
			m.Data = []byte(`{"model":"llama3.2","prompt":"too late"}`)
			if _, err := f.Queue.JetStream().PublishMsg(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			got, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if kind, status := got.Header.Get(job.HeaderKind), got.Header.Get(job.HeaderStatus); kind != "error" || status != strconv.Itoa(tt.wantStatus) {
				t.Errorf("answer %s %s (%s), want error %d", kind, status, got.Header.Get(job.HeaderError), tt.wantStatus)
			}
		})
	}
	if n := f.Sims[0].Stats().Requests; n != 0 {
		t.Errorf("Ollama saw %d requests, want none", n)
	}
}
