package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// storedRecord is one message of the audit stream.
type storedRecord struct {
	subject string
	raw     []byte
	rec     audit.Record
}

// auditRecords returns every record in the audit stream, in order.
func auditRecords(t *testing.T, js jetstream.JetStream) []storedRecord {
	t.Helper()
	s, err := js.Stream(t.Context(), job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRecord
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		r := storedRecord{subject: m.Subject, raw: m.Data}
		if err := json.Unmarshal(m.Data, &r.rec); err != nil {
			t.Fatalf("record %d: %v: %s", seq, err, m.Data)
		}
		out = append(out, r)
	}
	return out
}

// waitSettled waits until the job stream is empty: every job acked or
// terminated, and so every record written.
func waitSettled(t *testing.T, f *fleettest.Fleet) {
	t.Helper()
	f.WaitFor("every job to be settled", func() bool {
		s, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		if err != nil {
			return false
		}
		info, err := s.Info(t.Context())
		return err == nil && info.State.Msgs == 0
	})
}

// rawJob is a job as a NATS-native client publishes it, with headers.
type rawJob struct {
	id, subject, reply, route, body string
	header                          map[string]string
}

// publish queues j and returns a subscription to its reply subject.
func (j rawJob) publish(t *testing.T, f *fleettest.Fleet) *nats.Subscription {
	t.Helper()
	sub, err := f.NC.SubscribeSync(j.reply)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	m := nats.NewMsg(j.subject)
	m.Header.Set(job.HeaderJob, j.id)
	m.Header.Set(job.HeaderRoute, j.route)
	m.Header.Set(job.HeaderReply, j.reply)
	for k, v := range j.header {
		m.Header.Set(k, v)
	}
	m.Data = []byte(j.body)
	if _, err := f.Queue.JetStream().PublishMsg(t.Context(), m, jetstream.WithMsgID(j.id)); err != nil {
		t.Fatal(err)
	}
	return sub
}

// end reads a job's replies up to its done or error.
func end(t *testing.T, sub *nats.Subscription) job.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatalf("replies on %s: %v", sub.Subject, err)
		}
		r, err := job.ParseReply(m.Header, m.Data)
		if err != nil {
			t.Fatalf("reply %v: %v", m.Header, err)
		}
		if r.Kind == job.KindDone || r.Kind == job.KindError {
			return r
		}
	}
}

// TestOneAuditRecordPerEndedJob: every job a worker ends for good (done,
// failed, out of retries, canceled, expired, malformed, unanswerable, of a
// model nobody serves) has exactly one record, with what the job said about
// itself and how it ended, and none of its prompt. With auth on, the worker
// writes them on worker credentials (fleettest fails the test on a
// permission violation).
func TestOneAuditRecordPerEndedJob(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testOneAuditRecordPerEndedJob(t, m.Auth) })
	}
}

func testOneAuditRecordPerEndedJob(t *testing.T, auth bool) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Auth: auth})
	const requester = "wtest"
	llama := job.JobSubject("llama3.2:latest", job.Interactive, requester)
	tests := []struct {
		name    string
		subject string // default: llama's interactive jobs
		route   string // default /api/generate
		reply   string // default: the requester's reply subject of the job
		header  map[string]string
		failure ollamasim.Failure
		// during runs while the job runs, after the worker took it.
		during func(t *testing.T, id string)
		// want: the end the requester sees (no reply: zero), and the record.
		wantKind   job.Kind
		wantStatus int
		want       audit.Record // Outcome, Status, Attempts, Model, Class, Batch, Worker
		wantError  string       // in the record's error
	}{
		{name: "done", wantKind: job.KindDone,
			want: audit.Record{Outcome: audit.Done, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "failed", failure: ollamasim.Failure{Status: http.StatusBadRequest, Message: "no such option"},
			wantKind: job.KindError, wantStatus: 400, wantError: "no such option",
			want: audit.Record{Outcome: audit.Failed, Status: 400, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "out of retries", failure: ollamasim.Failure{Status: http.StatusServiceUnavailable, Message: "busy"},
			wantKind: job.KindError, wantStatus: 503, wantError: "gave up after 4 attempts",
			want: audit.Record{Outcome: audit.DeadLettered, Status: 503, Attempts: 4, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "canceled", failure: ollamasim.Failure{Hang: true},
			during: func(t *testing.T, id string) {
				f.WaitFor("the job to reach Ollama", func() bool { return f.Sims[0].Stats().Active == 1 })
				if err := f.NC.Publish(job.CancelSubject(requester, id), nil); err != nil {
					t.Fatal(err)
				}
			},
			wantKind: job.KindError, wantStatus: 499,
			want: audit.Record{Outcome: audit.Canceled, Status: 499, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "expired", header: map[string]string{job.HeaderDeadline: time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)},
			wantKind: job.KindError, wantStatus: 503, wantError: "past its deadline",
			want: audit.Record{Outcome: audit.Expired, Status: 503, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "batch expired", subject: job.JobSubject("llama3.2:latest", job.Batch, requester),
			header:   map[string]string{job.HeaderBatch: "b1", job.HeaderDeadline: time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)},
			wantKind: job.KindError, wantStatus: 408, wantError: "batch expired",
			want: audit.Record{Outcome: audit.Expired, Status: 408, Attempts: 1, Model: "llama3.2:latest", Class: "batch", Batch: "b1", Worker: "w0"}},
		{name: "malformed", route: "/api/delete", wantKind: job.KindError, wantStatus: 400, wantError: "cannot be queued",
			want: audit.Record{Outcome: audit.DeadLettered, Status: 400, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "someone else's reply", reply: job.ReplySubject("other", "x1"), wantError: `belongs to requester "other"`,
			want: audit.Record{Outcome: audit.DeadLettered, Attempts: 1, Model: "llama3.2:latest", Class: "interactive", Worker: "w0"}},
		{name: "model nobody serves", subject: job.JobSubject("ghost:latest", job.Interactive, requester),
			wantKind: job.KindError, wantStatus: 404, wantError: "not found",
			want: audit.Record{Outcome: audit.Failed, Status: 404, Model: "ghost:latest", Class: "interactive", Worker: "w0"}},
		{name: "subject that names no model", subject: "ollamaq.jobs.No-Such.interactive." + requester,
			wantKind: job.KindError, wantStatus: 400, wantError: "names no model",
			want: audit.Record{Outcome: audit.DeadLettered, Status: 400, Worker: "w0"}},
	}
	ids := map[string]int{} // job ID -> case
	var prompts []string
	usage := map[string]*job.Usage{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := rawJob{id: job.NewID(), subject: tt.subject, reply: tt.reply, route: tt.route,
				header: map[string]string{job.HeaderKey: "key-" + tt.name, job.HeaderTenant: "tenant " + tt.name, job.HeaderKeyMAC: "mac+" + tt.name}}
			if j.subject == "" {
				j.subject = llama
			}
			if j.reply == "" {
				j.reply = job.ReplySubject(requester, j.id)
			}
			if j.route == "" {
				j.route = "/api/generate"
			}
			for k, v := range tt.header {
				j.header[k] = v
			}
			prompt := "secret prompt of " + j.id
			prompts = append(prompts, prompt)
			j.body = `{"model":"llama3.2","prompt":"` + prompt + `","stream":false}`
			ids[j.id] = i
			f.Sims[0].SetFailure(tt.failure)
			defer f.Sims[0].SetFailure(ollamasim.Failure{})
			sub := j.publish(t, f)
			if tt.during != nil {
				tt.during(t, j.id)
			}
			if tt.wantKind == "" {
				waitSettled(t, f) // Nobody is told.
				return
			}
			rep := end(t, sub)
			if rep.Kind != tt.wantKind || rep.Status != tt.wantStatus {
				t.Fatalf("job ended with %s %d %q, want %s %d", rep.Kind, rep.Status, rep.Error, tt.wantKind, tt.wantStatus)
			}
			usage[j.id] = rep.Usage
			waitSettled(t, f)
		})
	}

	// Settled jobs have their records, but a job of a subject no worker
	// serves leaves the queue before its record is written.
	var records []storedRecord
	f.WaitFor("a record of every job", func() bool {
		records = auditRecords(t, f.Queue.JetStream())
		have := map[string]bool{}
		for _, r := range records {
			if _, ok := ids[r.rec.Job]; ok {
				have[r.rec.Job] = true
			}
		}
		return len(have) == len(ids)
	})
	seen := map[string]bool{}
	for _, r := range records {
		got := r.rec
		i, ok := ids[got.Job]
		switch {
		case !ok:
			t.Errorf("a record of no job of the test: %s", r.raw)
			continue
		case seen[got.Job]:
			t.Errorf("a second record of job %q (%s): %s", tests[i].name, got.Job, r.raw)
			continue
		}
		seen[got.Job] = true
		tt := tests[i]
		for _, p := range prompts {
			if bytes.Contains(r.raw, []byte(p)) {
				t.Errorf("%s: the record holds a prompt: %s", tt.name, r.raw)
			}
		}
		model := "-"
		if tt.want.Model != "" {
			model = job.EncodeModel(tt.want.Model)
		}
		if want := "ollamaq.audit.job." + model + "." + requester; r.subject != want {
			t.Errorf("%s: record on %s, want %s", tt.name, r.subject, want)
		}
		w := tt.want
		w.Kind, w.Job, w.Requester = job.AuditJob, got.Job, requester
		w.Key, w.Tenant, w.MAC = "key-"+tt.name, "tenant "+tt.name, "mac+"+tt.name
		w.Route = "/api/generate"
		if tt.route != "" {
			w.Route = tt.route
		}
		if u := usage[got.Job]; u != nil {
			w.PromptTokens, w.CompletionTokens = u.PromptTokens, u.CompletionTokens
		}
		if tt.name == "done" && (w.PromptTokens == 0 || w.CompletionTokens == 0) {
			t.Errorf("done: the done reply had usage %+v, want Ollama's counts", usage[got.Job])
		}
		// The volatile fields, checked apart.
		cmp := got
		cmp.Time, cmp.Queued, cmp.QueueMS, cmp.RunMS, cmp.Error = time.Time{}, time.Time{}, 0, 0, ""
		if cmp != w {
			t.Errorf("%s: record\n got %+v\nwant %+v", tt.name, cmp, w)
		}
		if !strings.Contains(got.Error, tt.wantError) || tt.wantError == "" && got.Error != "" {
			t.Errorf("%s: record error %q, want it to contain %q", tt.name, got.Error, tt.wantError)
		}
		if got.Queued.IsZero() || got.Time.Before(got.Queued) || time.Since(got.Time) > time.Minute || got.QueueMS < 0 || got.RunMS < 0 {
			t.Errorf("%s: times: queued %s, written %s, queue %dms, run %dms", tt.name, got.Queued, got.Time, got.QueueMS, got.RunMS)
		}
	}
	for id, i := range ids {
		if !seen[id] {
			t.Errorf("%s: no record of job %s", tests[i].name, id)
		}
	}
}

// TestNoAuditRecordForNodeCommands: a node command is not a job.
func TestNoAuditRecordForNodeCommands(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req := requester(t, f)
	st, err := req.Command("w0", job.NewID(), "/api/show", []byte(`{"model":"llama3.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if rep := finish(t, st); rep.Kind != job.KindDone || rep.Usage != nil {
		t.Fatalf("show ended with %s %q, usage %v", rep.Kind, rep.Error, rep.Usage)
	}
	// A job after it: once its record is there, the command's would be too.
	if rep := finish(t, submit(t, req, job.Interactive, "after")); rep.Kind != job.KindDone {
		t.Fatalf("job ended with %s %q", rep.Kind, rep.Error)
	}
	waitSettled(t, f)
	// The record and the ack go to two streams, which the server stores
	// in either order: wait for the job's record, then look at them all.
	f.WaitFor("the job's audit record", func() bool { return len(auditRecords(t, f.Queue.JetStream())) > 0 })
	if records := auditRecords(t, f.Queue.JetStream()); len(records) != 1 || records[0].rec.Route != "/api/generate" {
		t.Errorf("records %+v, want only the job's", records)
	}
}
