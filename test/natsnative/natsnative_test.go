// Package natsnative_test submits a job the way docs/protocol.md tells any NATS
// client to, using nats.go alone: no package of this module touches the job
// or its replies. Only the test's set-up (server, worker, simulator) is ours.
package natsnative_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
	msg := nats.NewMsg("ollamaq.jobs.llama3_2e2_3alatest.interactive")
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
