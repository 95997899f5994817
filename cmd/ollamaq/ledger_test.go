package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// counts are the token counts of a final Ollama frame.
type counts struct {
	Prompt     int `json:"prompt_eval_count"`
	Completion int `json:"eval_count"`
}

// TestUsageEqualsOllamasCounts runs jobs through the dispatcher with an API
// key and NATS-native jobs, then checks that ollamaq usage reports, per
// tenant, exactly the sums of the token counts Ollama put in the answers,
// and that the audit trail has exactly one record per job.
func TestUsageEqualsOllamasCounts(t *testing.T) {
	for _, mode := range fleettest.AuthModes {
		t.Run(mode.Name, func(t *testing.T) {
			f := fleettest.Start(t, fleettest.Options{Workers: 2, Keys: true, Auth: mode.Auth})
			_, secret := f.CreateKey(apikey.Key{Name: "webui", Tenant: "acme", Role: apikey.User})
			var want counts
			for i := range 6 {
				body := fmt.Sprintf(`{"model":"llama3.2","prompt":"question %d","stream":%t,"options":{"num_predict":%d}}`, i, i%2 == 0, 5+i)
				want = add(want, httpJob(t, f.URL, secret, body))
			}
			nc, requester := f.NC, "natsclient"
			if mode.Auth {
				nc = f.ClientConn(requester)
			}
			var native counts
			for i := range 4 {
				native = add(native, nativeJob(t, f, nc, requester, fmt.Sprintf(`{"model":"llama3.2","prompt":"native %d","stream":false}`, i)))
			}

			c := newCLI(t, f.Broker.ClientURL())
			c.now = time.Now
			args := []string{"usage", "--since", "1h", "--by", "tenant", "--json"}
			if mode.Auth {
				args = append([]string{"--creds", f.CredsPath(fleettest.AdminUser)}, args...)
			}
			var rows []usageRow
			fleettest.WaitFor(t, 5*time.Second, "every job's audit record", func() bool {
				code, out, errOut := c.run(args...)
				if code != exitOK {
					t.Fatalf("ollamaq usage = %d: %s", code, errOut)
				}
				rows = nil
				if err := json.Unmarshal([]byte(out), &rows); err != nil {
					t.Fatalf("usage --json: %v\n%s", err, out)
				}
				n := 0
				for _, r := range rows {
					n += r.Requests
				}
				return n == 10
			})
			got := map[string]usageRow{}
			for _, r := range rows {
				got[r.Tenant] = r
			}
			for tenant, w := range map[string]struct {
				n int
				c counts
			}{"acme": {6, want}} {
				r := got[tenant]
				if r.Requests != w.n || r.PromptTokens != int64(w.c.Prompt) || r.CompletionTokens != int64(w.c.Completion) {
					t.Errorf("tenant %s: %d requests, %d prompt and %d completion tokens; Ollama counted %d jobs, %d and %d",
						tenant, r.Requests, r.PromptTokens, r.CompletionTokens, w.n, w.c.Prompt, w.c.Completion)
				}
			}
			var nr usageRow
			for _, r := range rows {
				if r.Requester == requester {
					nr = r
				}
			}
			if nr.Requests != 4 || nr.PromptTokens != int64(native.Prompt) || nr.CompletionTokens != int64(native.Completion) {
				t.Errorf("NATS-native jobs of %s: %+v; Ollama counted 4 jobs, %d prompt and %d completion tokens", requester, nr, native.Prompt, native.Completion)
			}
			st, err := f.Queue.JetStream().Stream(t.Context(), job.AuditStream)
			if err != nil {
				t.Fatal(err)
			}
			if n := st.CachedInfo().State.Msgs; n != 10 {
				t.Errorf("the audit stream holds %d records, want exactly one per job: 10", n)
			}
		})
	}
}

func add(a, b counts) counts { return counts{a.Prompt + b.Prompt, a.Completion + b.Completion} }

// httpJob sends an /api/generate request with the key and returns the
// counts of its final frame.
func httpJob(t *testing.T, url, secret, body string) counts {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url+"/api/generate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("generate: %d %s", resp.StatusCode, b)
	}
	return final(t, b)
}

// final returns the counts of the last NDJSON line of an answer.
func final(t *testing.T, answer []byte) counts {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(answer)), "\n")
	var c counts
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &c); err != nil || c.Completion == 0 {
		t.Fatalf("final frame %q: %v, want token counts", lines[len(lines)-1], err)
	}
	return c
}

// nativeJob queues an /api/generate job on nc as requester, as any NATS
// client would, and returns the counts of its answer.
func nativeJob(t *testing.T, f *fleettest.Fleet, nc *nats.Conn, requester, body string) counts {
	t.Helper()
	q, err := queue.Open(t.Context(), mustJetStream(t, nc))
	if err != nil {
		t.Fatal(err)
	}
	r, err := queue.NewRequester(nc, q, requester)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	st, err := r.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: "llama3.2:latest", Class: job.Interactive, Route: "/api/generate", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var answer []byte
	err = st.Follow(t.Context(), 10*time.Second, 10*time.Second, func(rep job.Reply) bool {
		if rep.Kind == job.KindData {
			answer = append(answer, rep.Data...)
		}
		return rep.Kind != job.KindDone && rep.Kind != job.KindError
	})
	if err != nil {
		t.Fatal(err)
	}
	return final(t, answer)
}

func mustJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
