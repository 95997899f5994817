package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// usageFleet is one worker in front of a simulator with a text model and an
// embedding model.
func usageFleet(t *testing.T, auth bool) *fleettest.Fleet {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = -1, -1
	sim.Models = []ollamasim.Model{{Name: "llama3.2:latest"}, {Name: "nomic-embed-text:latest", Capabilities: []string{"embedding"}}}
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim, Auth: auth})
	f.WaitFor("both models to be served", func() bool {
		n := f.Node(0)
		return n != nil && n.State == fleet.StateReady && len(n.Models) == 2
	})
	return f
}

// relayed runs a job and returns the bytes its data replies carried and its
// last reply.
func relayed(t *testing.T, req *queue.Requester, model, route, body string) ([]byte, job.Reply) {
	t.Helper()
	st, err := req.Submit(t.Context(), queue.Job{ID: job.NewID(), Model: model, Class: job.Interactive, Route: route, Body: []byte(body), Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var data bytes.Buffer
	for {
		rep, err := st.Next(ctx)
		if err != nil {
			t.Fatalf("%s job: %v", route, err)
		}
		switch rep.Kind {
		case job.KindData:
			data.Write(rep.Data)
		case job.KindDone, job.KindError:
			return data.Bytes(), rep
		}
	}
}

// direct sends the request to the simulator itself.
func direct(t *testing.T, f *fleettest.Fleet, route, body string) []byte {
	t.Helper()
	resp, err := http.Post(f.SimURLs[0].String()+route, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %v: %s", route, resp.StatusCode, err, b)
	}
	return b
}

// finalCounts reads the token counts from the last JSON value of an Ollama
// response that has any: an NDJSON line, an SSE event's data, or the body.
func finalCounts(t *testing.T, b []byte) *job.Usage {
	t.Helper()
	var values [][]byte
	switch {
	case bytes.HasPrefix(b, []byte("data: ")):
		for ev := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n\n") {
			values = append(values, []byte(strings.TrimPrefix(ev, "data: ")))
		}
	default:
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			values = append(values, bytes.Clone(sc.Bytes()))
		}
	}
	var found *job.Usage
	for _, v := range values {
		var c struct {
			PromptEvalCount *int `json:"prompt_eval_count"`
			EvalCount       *int `json:"eval_count"`
			Usage           *struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(v, &c) != nil {
			continue
		}
		switch {
		case c.Usage != nil:
			found = &job.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
		case c.PromptEvalCount != nil || c.EvalCount != nil:
			found = &job.Usage{}
			if c.PromptEvalCount != nil {
				found.PromptTokens = *c.PromptEvalCount
			}
			if c.EvalCount != nil {
				found.CompletionTokens = *c.EvalCount
			}
		}
	}
	return found
}

// volatileOpenAI are the parts of an OpenAI answer that differ between two
// runs of one request: the random completion ID and the time.
var volatileOpenAI = regexp.MustCompile(`"id":"(chat)?cmpl-[0-9]+"|"created":[0-9]+`)

// volatileNative are those of a native answer: times and durations.
var volatileNative = regexp.MustCompile(`"(created_at|total_duration|load_duration|prompt_eval_duration|eval_duration)":("[^"]*"|[0-9]+)`)

func stable(b []byte) string {
	return volatileNative.ReplaceAllString(volatileOpenAI.ReplaceAllString(string(b), "<volatile>"), "<volatile>")
}

// TestDoneCarriesOllamasTokenCounts: the done reply of a job carries the
// counts Ollama reported in its final frame, on every route that reports
// them; what the client receives is what Ollama sends for its request.
func TestDoneCarriesOllamasTokenCounts(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testDoneCarriesCounts(t, m.Auth) })
	}
}

func testDoneCarriesCounts(t *testing.T, auth bool) {
	f := usageFleet(t, auth)
	req := requester(t, f)
	const chat = `{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}]`
	tests := []struct {
		name, model, route, body string
		// countsFrom, if set, is the request whose direct answer has the
		// counts, when the job's own answer does not.
		countsFrom string
		noUsage    bool
	}{
		{name: "generate streamed", route: "/api/generate", body: `{"model":"llama3.2","prompt":"Why is the sky blue?"}`},
		{name: "generate", route: "/api/generate", body: `{"model":"llama3.2","prompt":"Hello","stream":false,"options":{"num_predict":7}}`},
		{name: "chat streamed", route: "/api/chat", body: chat + `}`},
		{name: "chat", route: "/api/chat", body: chat + `,"stream":false}`},
		{name: "embed", model: "nomic-embed-text:latest", route: "/api/embed", body: `{"model":"nomic-embed-text","input":["one","two three"]}`},
		{name: "embeddings legacy", model: "nomic-embed-text:latest", route: "/api/embeddings", body: `{"model":"nomic-embed-text","prompt":"one"}`, noUsage: true},
		{name: "openai chat", route: "/v1/chat/completions", body: chat + `}`},
		{name: "openai chat streamed", route: "/v1/chat/completions", body: chat + `,"stream":true}`,
			countsFrom: chat + `,"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "openai chat streamed, client said no", route: "/v1/chat/completions", body: chat + `,"stream":true,"stream_options":{"include_usage":false}}`,
			countsFrom: chat + `,"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "openai chat streamed with usage", route: "/v1/chat/completions", body: chat + `,"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "openai completions", route: "/v1/completions", body: `{"model":"llama3.2","prompt":"Once upon"}`},
		{name: "openai completions streamed", route: "/v1/completions", body: `{"model":"llama3.2","prompt":"Once upon","stream":true}`, noUsage: true},
		{name: "openai completions streamed with usage", route: "/v1/completions", body: `{"model":"llama3.2","prompt":"Once upon","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "openai embeddings", model: "nomic-embed-text:latest", route: "/v1/embeddings", body: `{"model":"nomic-embed-text","input":["one","two three"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.model == "" {
				tt.model = "llama3.2:latest"
			}
			got, done := relayed(t, req, tt.model, tt.route, tt.body)
			if done.Kind != job.KindDone {
				t.Fatalf("job ended with %s %d %q", done.Kind, done.Status, done.Error)
			}
			want := direct(t, f, tt.route, tt.body)
			if stable(got) != stable(want) {
				t.Errorf("the client received\n%s\nOllama sends\n%s", got, want)
			}
			wantUsage := finalCounts(t, want)
			if tt.countsFrom != "" {
				if wantUsage != nil {
					t.Fatalf("Ollama's own answer has counts %+v: the case needs no countsFrom", *wantUsage)
				}
				wantUsage = finalCounts(t, direct(t, f, tt.route, tt.countsFrom))
			}
			switch {
			case tt.noUsage:
				if done.Usage != nil {
					t.Errorf("done has usage %+v; Ollama reported none", *done.Usage)
				}
			case wantUsage == nil:
				t.Fatalf("the simulator reported no counts for %s", tt.body)
			case done.Usage == nil:
				t.Errorf("done has no usage, want %+v", *wantUsage)
			case *done.Usage != *wantUsage:
				t.Errorf("done usage %+v, want %+v", *done.Usage, *wantUsage)
			case wantUsage.PromptTokens == 0:
				t.Errorf("usage %+v: the simulator counted no prompt tokens, the case proves little", *wantUsage)
			}
		})
	}
}
