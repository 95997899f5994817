package worker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// jobsQueued is the number of jobs in the job stream.
func jobsQueued(t *testing.T, f *fleettest.Fleet) uint64 {
	t.Helper()
	s, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// TestDeadRequestersQueuedJobsNeverRun: jobs queued by a requester that then
// died (its connection gone) are dropped by the worker that takes them, not
// run for nobody.
func TestDeadRequestersQueuedJobsNeverRun(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	f.StopWorker(0)
	nc, err := nats.Connect(f.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	req, err := queue.NewRequester(nc, f.Queue, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive,
			Route: "/api/generate", Body: []byte(`{"model":"llama3.2","prompt":"for nobody"}`), Wait: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close() // The requester dies with its jobs queued.
	f.StartWorker(0)
	f.WaitFor("the dead requester's jobs to leave the queue", func() bool { return jobsQueued(t, f) == 0 })
	if s := f.Sims[0].Stats(); s.Requests != 0 {
		t.Fatalf("Ollama got %d requests for a requester that was gone, want none", s.Requests)
	}
}

// TestRequesterDeathStopsTheJobWithin2s: a job running for a requester whose
// connection drops stops on the GPU within two seconds (the worker's probe
// every second finds no responder).
func TestRequesterDeathStopsTheJobWithin2s(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	f.Sims[0].SetFailure(ollamasim.Failure{Hang: true}) // A generation that would run forever.
	nc, err := nats.Connect(f.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	req, err := queue.NewRequester(nc, f.Queue, "mortal")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive,
		Route: "/api/generate", Body: []byte(`{"model":"llama3.2","prompt":"long"}`), Wait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("Ollama to be generating", func() bool { return f.Sims[0].Stats().Active == 1 })
	died := time.Now()
	nc.Close()
	fleettest.WaitFor(t, 2*time.Second, "Ollama's request to be canceled within 2s of the requester's death",
		func() bool { return f.Sims[0].Stats().Canceled == 1 })
	t.Logf("stopped %s after the requester died", time.Since(died).Round(time.Millisecond))
	f.WaitFor("the job to leave the queue", func() bool { return jobsQueued(t, f) == 0 })
}

// TestSupersededWorkerLeavesTheJob: a worker whose requester follows a later
// attempt (it took the worker for dead and had the job redelivered) stops
// the job on its Ollama and leaves the delivery alone: no ack, no term, no
// reply, so the later delivery is the one that ends it. The test plays a
// requester with plain NATS that answers the worker's probe so.
func TestSupersededWorkerLeavesTheJob(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, AckWait: 30 * time.Second})
	f.Sims[0].SetFailure(ollamasim.Failure{Hang: true})
	probes := make(chan job.ResumeRequest, 16)
	replies := rawLiveJob(t, f, `{"model":"llama3.2","prompt":"long"}`, func(r job.ResumeRequest) job.Progress {
		probes <- r
		p := job.Progress{Attempt: r.Attempt}
		if r.Probe {
			p.Attempt = r.Attempt + 1 // Following a later delivery now.
		}
		return p
	})
	fleettest.WaitFor(t, 5*time.Second, "Ollama's request to be canceled once the probe says superseded",
		func() bool { return f.Sims[0].Stats().Canceled == 1 })
	if first := <-probes; first.Probe || first.Attempt != 1 {
		t.Errorf("first question %+v, want the before-run question for attempt 1", first)
	}
	// Only start and heartbeats: no error reply, which would end the
	// client's answer.
	for {
		m, err := replies.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if k := m.Header.Get(job.HeaderKind); k != string(job.KindStart) && k != string(job.KindHeartbeat) {
			t.Errorf("a superseded worker sent a %s reply", k)
		}
	}
	if n := jobsQueued(t, f); n != 1 {
		t.Errorf("%d jobs in the stream, want the superseded delivery left for its later attempt", n)
	}
}

// TestNoRespondersJustAfterAReconnectIsNotDeath: right after a nats-server
// restart a worker may be back before the requesters are; a job whose
// requester does not answer then is run, not dropped for a dead requester
// (it would be lost to a requester that is back a second later). The test
// reconnects the worker and publishes a job for a requester nobody plays.
func TestNoRespondersJustAfterAReconnectIsNotDeath(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	f.ReconnectWorker(0)
	if _, err := f.Queue.Publish(t.Context(), queue.Job{ID: "j1", Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Reply: job.ReplySubject("notyetback", "j1"), Body: []byte(`{"model":"llama3.2","prompt":"x","stream":false}`), Live: true}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("the job to run", func() bool { return f.Sims[0].Stats().Completed == 1 })
}

// TestWholeAnswerAtTheRequesterEndsTheJob: a worker that died after the
// answer's final frame and before its done reply leaves a job whose
// requester has everything; the next worker only ends it (start, done) and
// runs nothing, so the client never gets a second ending. The test plays
// that requester with plain NATS.
func TestWholeAnswerAtTheRequesterEndsTheJob(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	replies := rawLiveJob(t, f, `{"model":"llama3.2","prompt":"x"}`, func(job.ResumeRequest) job.Progress {
		return job.Progress{Frames: 3, Text: "all of it", Complete: true}
	})
	var kinds []string
	for len(kinds) < 2 {
		m, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("replies %v: %v", kinds, err)
		}
		rep, err := job.ParseReply(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Kind == job.KindStart && rep.Resumed != 3 {
			t.Errorf("start resumes after %d frames, want the requester's 3", rep.Resumed)
		}
		if rep.Kind != job.KindHeartbeat {
			kinds = append(kinds, string(rep.Kind))
		}
	}
	if kinds[0] != string(job.KindStart) || kinds[1] != string(job.KindDone) {
		t.Fatalf("replies %v, want start, done", kinds)
	}
	f.WaitFor("the job to be acked", func() bool { return jobsQueued(t, f) == 0 })
	if s := f.Sims[0].Stats(); s.Requests != 0 {
		t.Errorf("Ollama got %d requests for an answer the requester has whole", s.Requests)
	}
}

// rawLiveJob plays a requester with plain NATS: it answers the worker's
// resume questions with answer, publishes job j1 with body and
// Ollamaq-Live, and returns the subscription to its replies.
func rawLiveJob(t *testing.T, f *fleettest.Fleet, body string, answer func(job.ResumeRequest) job.Progress) *nats.Subscription {
	t.Helper()
	replies, err := f.NC.SubscribeSync(job.ReplyPrefix + ".raw.>")
	if err != nil {
		t.Fatal(err)
	}
	rawLiveJobWith(t, f, body, answer)
	return replies
}

// rawLiveJobWith is rawLiveJob for a test that reads the replies itself.
func rawLiveJobWith(t *testing.T, f *fleettest.Fleet, body string, answer func(job.ResumeRequest) job.Progress) {
	t.Helper()
	resume, err := f.NC.Subscribe(job.ResumePrefix+".raw.>", func(m *nats.Msg) {
		var r job.ResumeRequest
		_ = json.Unmarshal(m.Data, &r)
		b, _ := json.Marshal(answer(r))
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resume.Unsubscribe() })
	if _, err := f.Queue.Publish(t.Context(), queue.Job{ID: "j1", Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate",
		Reply: job.ReplySubject("raw", "j1"), Body: []byte(body), Live: true}); err != nil {
		t.Fatal(err)
	}
}

// TestDoneSentAcrossAReconnectIsConfirmed: a worker whose NATS connection
// dropped while it held a job cannot know whether its replies arrived, so
// before it settles the job it sends its done reply again as a request on
// the reply subject. A requester that has the whole answer says gone, and
// the job is acked; one that lost replies and could not NAK says lost, and
// the worker hands the job back at once for another to continue.
func TestDoneSentAcrossAReconnectIsConfirmed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    job.Progress
		redeliver bool
	}{
		{"whole at the requester", job.Progress{Gone: true}, false},
		{"replies lost", job.Progress{Attempt: 2, Lost: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := ollamasim.DefaultConfig()
			sim.TokensPerSecond, sim.DefaultTokens = 20, 20 // A second of streaming.
			f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim})
			type confirmation struct {
				kind job.Kind
				seq  int
			}
			confirms := make(chan confirmation, 4)
			data := make(chan struct{}, 64)
			var lastSeq int
			redelivered := make(chan int, 4)
			replies, err := f.NC.Subscribe(job.ReplyPrefix+".raw.>", func(m *nats.Msg) {
				rep, err := job.ParseReply(m.Header, m.Data)
				if err != nil {
					t.Errorf("reply: %v", err)
					return
				}
				if m.Reply == "" {
					lastSeq = rep.Seq
					if rep.Kind == job.KindData {
						data <- struct{}{}
					}
					return
				}
				confirms <- confirmation{rep.Kind, rep.Seq}
				b, _ := json.Marshal(tc.answer)
				_ = m.Respond(b)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = replies.Unsubscribe() }()
			rawLiveJobWith(t, f, `{"model":"llama3.2","prompt":"across a reconnect"}`, func(r job.ResumeRequest) job.Progress {
				if r.Attempt > 1 && !r.Probe {
					redelivered <- r.Attempt
					return job.Progress{Gone: true}
				}
				return job.Progress{Attempt: 1}
			})
			select {
			case <-data:
			case <-time.After(10 * time.Second):
				t.Fatal("no data reply")
			}
			f.ReconnectWorker(0)
			select {
			case c := <-confirms:
				if c.kind != job.KindDone || c.seq != lastSeq {
					t.Fatalf("confirmation was %s seq %d, want the done reply again (seq %d)", c.kind, c.seq, lastSeq)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the worker did not confirm its done reply after its reconnect")
			}
			if tc.redeliver {
				select {
				case a := <-redelivered:
					if a != 2 {
						t.Fatalf("redelivered as attempt %d, want 2", a)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the job was not handed back after the requester said its replies were lost")
				}
			}
			f.WaitFor("the job to leave the stream", func() bool { return jobsQueued(t, f) == 0 })
			select {
			case a := <-redelivered:
				if !tc.redeliver {
					t.Fatalf("the job was delivered again (attempt %d) though the requester had it whole", a)
				}
			default:
			}
		})
	}
}
