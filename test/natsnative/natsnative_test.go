// Package natsnative_test submits a job the way docs/protocol.md tells any NATS
// client to, using nats.go alone: no package of this module touches the job
// or its replies. Only the test's set-up (server, worker, simulator) is ours.
package natsnative_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
)

func TestPlainNATSClientGetsStreamedReply(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	nc, err := nats.Connect(f.Broker.ClientURL()) // Over TCP, like any other client.
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// 1. Subscribe to a reply subject of our own before publishing.
	reply := "ollamaq.reply.alice.job-42"
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	// 2. Publish the Ollama request, unchanged, to the model's subject:
	//    llama3.2 -> llama3.2:latest -> llama3_2e2_3alatest, class interactive.
	msg := nats.NewMsg("ollamaq.jobs.llama3_2e2_3alatest.interactive.alice")
	msg.Header.Set("Nats-Msg-Id", "job-42")
	msg.Header.Set("Ollamaq-Job", "job-42")
	msg.Header.Set("Ollamaq-Route", "/api/generate")
	msg.Header.Set("Ollamaq-Reply", reply)
	msg.Data = []byte(`{"model":"llama3.2","prompt":"Hello from a plain NATS client"}`)
	ack, err := nc.RequestMsg(msg, 5*time.Second) // A JetStream publish is a request; the answer is the PubAck.
	if err != nil {
		t.Fatal(err)
	}
	var pubAck struct {
		Stream string `json:"stream"`
		Seq    uint64 `json:"seq"`
	}
	if err := json.Unmarshal(ack.Data, &pubAck); err != nil || pubAck.Stream != "OLLAMAQ_JOBS" {
		t.Fatalf("publish ack %s, %v", ack.Data, err)
	}

	// 3. Read start, data..., done. Data bodies are Ollama's NDJSON lines, in order.
	var kinds []string
	var ndjson bytes.Buffer
	for seq := 1; ; seq++ {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("after %v: %v", kinds, err)
		}
		kind := m.Header.Get("Ollamaq-Kind")
		kinds = append(kinds, kind)
		if got := m.Header.Get("Ollamaq-Seq"); got != itoa(seq) {
			t.Fatalf("message %d has Ollamaq-Seq %q", seq, got)
		}
		if m.Header.Get("Ollamaq-Attempt") != "1" || m.Header.Get("Ollamaq-Job") != "job-42" {
			t.Fatalf("message %d headers %v", seq, m.Header)
		}
		if kind == "data" {
			if seq == 2 && (m.Header.Get("Ollamaq-Status") != "200" || m.Header.Get("Ollamaq-Content-Type") != "application/x-ndjson") {
				t.Fatalf("first data message headers %v", m.Header)
			}
			ndjson.Write(m.Data)
		}
		if kind == "done" || kind == "error" {
			break
		}
	}
	if kinds[0] != "start" || kinds[len(kinds)-1] != "done" || len(kinds) < 4 {
		t.Fatalf("reply kinds %v, want start, data..., done", kinds)
	}
	var text string
	var lines int
	sc := bufio.NewScanner(&ndjson)
	for sc.Scan() {
		var chunk struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil {
			t.Fatalf("line %d is not Ollama JSON: %q", lines+1, sc.Text())
		}
		text += chunk.Response
		lines++
		if chunk.Done != (lines == len(kinds)-2) {
			t.Fatalf("done=%v on line %d of %d", chunk.Done, lines, len(kinds)-2)
		}
	}
	if lines != len(kinds)-2 || text == "" {
		t.Fatalf("%d NDJSON lines for %d data messages, text %q", lines, len(kinds)-2, text)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestSilentWorkersRecordExpiresAfterThreeHeartbeats reads the node bucket as
// docs/protocol.md describes it: each record carries Nats-TTL of three
// heartbeats, and a worker that stops refreshing its record (here: killed,
// its connection cut) is gone from the bucket that long after its last
// refresh, with a marker that watchers see.
func TestSilentWorkersRecordExpiresAfterThreeHeartbeats(t *testing.T) {
	const heartbeat = time.Second
	const ttl = 3 * heartbeat
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Heartbeat: heartbeat})
	nc, err := nats.Connect(f.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), "ollamaq_nodes")
	if err != nil {
		t.Fatal(err)
	}
	watch, err := kv.Watch(t.Context(), "node.w0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	bucket, err := js.Stream(t.Context(), "KV_ollamaq_nodes")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := bucket.GetLastMsgForSubject(t.Context(), "$KV.ollamaq_nodes.node.w0")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rec.Header.Get("Nats-TTL"), ttl.String(); got != want {
		t.Fatalf("node record has Nats-TTL %q, want %q (three heartbeats of %s)", got, want, heartbeat)
	}

	f.KillWorker(0)
	var last jetstream.KeyValueEntry
	deadline := time.After(ttl + 5*time.Second)
	for {
		select {
		case <-deadline:
			t.Fatalf("the silent worker's record is still there %s after it was killed", ttl+5*time.Second)
		case e := <-watch.Updates():
			if e == nil {
				continue // The end of the initial values.
			}
			if e.Operation() == jetstream.KeyValuePut {
				last = e
				continue
			}
			if last == nil {
				t.Fatalf("record removed (%s) before any was seen", e.Operation())
			}
			// Both times are the server's: when the last refresh was stored, and
			// when the record's TTL ran out.
			gone := e.Created().Sub(last.Created())
			if gone < ttl-100*time.Millisecond || gone > ttl+1500*time.Millisecond {
				t.Fatalf("record gone %s after its last refresh (%s), want %s", gone.Round(time.Millisecond), e.Operation(), ttl)
			}
			t.Logf("record gone %s after its last refresh (%s)", gone.Round(time.Millisecond), e.Operation())
			return
		}
	}
}

// TestJobForAModelNoWorkerHasGets404 publishes a job for a model no worker
// ever had, as docs/protocol.md allows any client to: a worker answers it
// within a few seconds with error 404 and Ollama's message, as the
// dispatcher does over HTTP, and the job is gone from the stream.
func TestJobForAModelNoWorkerHasGets404(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2}) // Both look; one answers.
	nc, err := nats.Connect(f.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reply := "ollamaq.reply.alice.job-404"
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	// no-such-model-xyz -> no-such-model-xyz:latest -> no-such-model-xyz_3alatest.
	msg := nats.NewMsg("ollamaq.jobs.no-such-model-xyz_3alatest.interactive.alice")
	msg.Header.Set("Nats-Msg-Id", "job-404")
	msg.Header.Set("Ollamaq-Job", "job-404")
	msg.Header.Set("Ollamaq-Route", "/api/generate")
	msg.Header.Set("Ollamaq-Reply", reply)
	msg.Data = []byte(`{"model":"no-such-model-xyz","prompt":"Hello"}`)
	published := time.Now()
	ack, err := nc.RequestMsg(msg, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var pubAck struct {
		Stream string `json:"stream"`
		Seq    uint64 `json:"seq"`
	}
	if err := json.Unmarshal(ack.Data, &pubAck); err != nil || pubAck.Stream != "OLLAMAQ_JOBS" {
		t.Fatalf("publish ack %s, %v", ack.Data, err)
	}

	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no answer within 5s: %v", err)
	}
	const want = "model 'no-such-model-xyz' not found"
	for k, v := range map[string]string{"Ollamaq-Kind": "error", "Ollamaq-Status": "404", "Ollamaq-Error": want,
		"Ollamaq-Job": "job-404", "Ollamaq-Attempt": "1", "Ollamaq-Seq": "1"} {
		if got := m.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if got := string(m.Data); got != `{"error":"`+want+`"}` {
		t.Errorf("body %s, want Ollama's error shape", got)
	}
	t.Logf("answered %s after the publish", time.Since(published).Round(time.Millisecond))

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := js.Stream(t.Context(), "OLLAMAQ_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.GetMsg(t.Context(), pubAck.Seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("get the job after its answer: %v, want it gone from the stream", err)
	}
	// Each worker looks every 200ms here: a second answer would come by now.
	if extra, err := sub.NextMsg(500 * time.Millisecond); err == nil {
		t.Errorf("a second answer: %v", extra.Header)
	}
}

// TestJobWithSomeoneElsesReplyIsRefused plays the confused-deputy attack: a
// client publishes a job as "mallory" whose replies point at "alice". The
// worker must not publish into alice's replies; it buries the job with the
// reason. A job on a subject without a requester token is not even stored.
func TestJobWithSomeoneElsesReplyIsRefused(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	nc, err := nats.Connect(f.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	alice, err := nc.SubscribeSync("ollamaq.reply.alice.>")
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := nc.SubscribeSync("ollamaq.dlq.>")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subject, id, reply string) (*nats.Msg, error) {
		msg := nats.NewMsg(subject)
		msg.Header.Set("Nats-Msg-Id", id)
		msg.Header.Set("Ollamaq-Job", id)
		msg.Header.Set("Ollamaq-Route", "/api/generate")
		msg.Header.Set("Ollamaq-Reply", reply)
		msg.Data = []byte(`{"model":"llama3.2","prompt":"write into alice's answer"}`)
		return nc.RequestMsg(msg, 5*time.Second)
	}
	ack, err := publish("ollamaq.jobs.llama3_2e2_3alatest.interactive.mallory", "forged-1", "ollamaq.reply.alice.job-1")
	if err != nil || !bytes.Contains(ack.Data, []byte(`"OLLAMAQ_JOBS"`)) {
		t.Fatalf("publish: %v %s", err, ack.Data)
	}
	dead, err := dlq.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter for the forged job: %v", err)
	}
	if why := dead.Header.Get("Ollamaq-Dlq-Reason"); !strings.Contains(why, `belongs to requester "alice"`) || !strings.Contains(why, `"mallory"`) {
		t.Errorf("dead letter reason %q", why)
	}
	if m, err := alice.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("the worker published into alice's replies: %v %s", m.Header, m.Data)
	}

	// Nor into a batch's stored results, which belong to the requester "batch".
	results, err := nc.SubscribeSync("ollamaq.reply.batch.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish("ollamaq.jobs.llama3_2e2_3alatest.batch.mallory", "forged-2", "ollamaq.reply.batch.b1.job-3"); err != nil {
		t.Fatal(err)
	}
	dead, err = dlq.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter for the forged batch job: %v", err)
	}
	if why := dead.Header.Get("Ollamaq-Dlq-Reason"); !strings.Contains(why, `belongs to requester "batch"`) {
		t.Errorf("dead letter reason %q", why)
	}
	if m, err := results.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("the worker published into batch results: %v %s", m.Header, m.Data)
	}

	// The layout without a requester token is refused at the door: no
	// stream takes such a subject, so the publish has no JetStream answer.
	if _, err := publish("ollamaq.jobs.llama3_2e2_3alatest.interactive", "old-1", "ollamaq.reply.alice.job-2"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("publish on the old layout: %v, want no responders", err)
	}
}
