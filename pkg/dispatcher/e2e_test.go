package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/job"
)

func client(t *testing.T, base string) *api.Client {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(u, http.DefaultClient)
}

// generateText runs a generate request and returns the streamed pieces and the final response.
func generateText(t *testing.T, c *api.Client, req *api.GenerateRequest) ([]string, api.GenerateResponse) {
	t.Helper()
	var pieces []string
	var last api.GenerateResponse
	err := c.Generate(t.Context(), req, func(r api.GenerateResponse) error {
		pieces = append(pieces, r.Response)
		last = r
		return nil
	})
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return pieces, last
}

func TestOllamaClientThroughQueue(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{})
	viaQueue := client(t, f.URL)
	direct := client(t, f.SimURLs[0].String()) // The same simulator and seed: the reference answer.

	t.Run("generate streaming", func(t *testing.T) {
		req := &api.GenerateRequest{Model: "llama3.2", Prompt: "Why is the sky blue?"}
		got, gotLast := generateText(t, viaQueue, req)
		want, _ := generateText(t, direct, req)
		if strings.Join(got, "") != strings.Join(want, "") || len(got) != len(want) {
			t.Fatalf("through the queue: %d chunks %q\ndirect: %d chunks %q", len(got), strings.Join(got, ""), len(want), strings.Join(want, ""))
		}
		if len(got) < 3 {
			t.Errorf("got %d chunks, want a stream of several", len(got))
		}
		if !gotLast.Done || gotLast.DoneReason != "stop" || gotLast.EvalCount == 0 || gotLast.TotalDuration == 0 {
			t.Errorf("final chunk %+v lacks done and metrics", gotLast)
		}
	})

	t.Run("generate not streamed", func(t *testing.T) {
		stream := false
		req := &api.GenerateRequest{Model: "llama3.2:latest", Prompt: "Count to three", Stream: &stream}
		got, last := generateText(t, viaQueue, req)
		want, _ := generateText(t, direct, &api.GenerateRequest{Model: "llama3.2:latest", Prompt: "Count to three"})
		if len(got) != 1 || got[0] != strings.Join(want, "") || !last.Done {
			t.Fatalf("stream:false gave %d responses %q, want one %q", len(got), got, strings.Join(want, ""))
		}
	})

	t.Run("chat streaming and not", func(t *testing.T) {
		msgs := []api.Message{{Role: "user", Content: "Hello there"}}
		for _, streamed := range []bool{true, false} {
			var pieces []string
			var last api.ChatResponse
			req := &api.ChatRequest{Model: "LLAMA3.2", Messages: msgs, Stream: &streamed}
			if err := viaQueue.Chat(t.Context(), req, func(r api.ChatResponse) error {
				pieces = append(pieces, r.Message.Content)
				last = r
				return nil
			}); err != nil {
				t.Fatalf("chat (stream %v): %v", streamed, err)
			}
			var want strings.Builder
			if err := direct.Chat(t.Context(), &api.ChatRequest{Model: "llama3.2", Messages: msgs}, func(r api.ChatResponse) error {
				want.WriteString(r.Message.Content)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if strings.Join(pieces, "") != want.String() || !last.Done || last.Message.Role != "assistant" {
				t.Errorf("chat (stream %v) = %q done=%v role=%q, want %q", streamed, strings.Join(pieces, ""), last.Done, last.Message.Role, want.String())
			}
			if streamed == (len(pieces) == 1) {
				t.Errorf("chat (stream %v) came in %d responses", streamed, len(pieces))
			}
		}
	})

	t.Run("tags ps version", func(t *testing.T) {
		tags, err := viaQueue.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(tags.Models) != 1 || tags.Models[0].Name != "llama3.2:latest" || len(tags.Models[0].Digest) != 64 {
			t.Errorf("tags = %+v, want llama3.2:latest once (two workers have it)", tags.Models)
		}
		f.WaitFor("the used model to show as loaded", func() bool {
			ps, err := viaQueue.ListRunning(t.Context())
			return err == nil && len(ps.Models) == 1 && ps.Models[0].Name == "llama3.2:latest"
		})
		v, err := viaQueue.Version(t.Context())
		if want := ollamasim.DefaultConfig().Version; err != nil || v != want {
			t.Errorf("version = %q, %v; want the workers' Ollama version %s", v, err, want)
		}
		if err := viaQueue.Heartbeat(t.Context()); err != nil {
			t.Errorf("heartbeat (HEAD /): %v", err)
		}
	})
}

func TestBadRequestsAreNotQueued(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	tests := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"malformed", "/api/generate", `{"model":`, 400, "unexpected EOF"},
		{"empty body", "/api/chat", ``, 400, "missing request body"},
		{"wrong type", "/api/chat", `{"model":7}`, 400, "json: cannot unmarshal number into Go struct field ChatRequest.model of type string"},
		{"missing model chat", "/api/chat", `{"messages":[]}`, 400, "model is required"},
		{"missing model generate", "/api/generate", `{"prompt":"x"}`, 400, "model is required"},
		{"unknown model", "/api/generate", `{"model":"nope","prompt":"x"}`, 404, "model 'nope' not found"},
		{"invalid model name", "/api/chat", `{"model":"a b"}`, 400, "invalid model name"}, // As Ollama 0.32.
		{"too large", "/api/generate", `{"model":"llama3.2","prompt":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "request body too large: the limit is 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ct, body := post(t, f.URL+tt.path, tt.body)
			if status != tt.status || ct != "application/json; charset=utf-8" || body != `{"error":"`+tt.msg+`"}` {
				t.Errorf("got %d %q %s, want %d {\"error\":%q}", status, ct, body, tt.status, tt.msg)
			}
		})
	}
	si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := si.CachedInfo().State.LastSeq; n != 0 {
		t.Errorf("%d jobs were published for bad requests, want none", n)
	}
	if n := f.Sims[0].Stats().Requests; n != 0 {
		t.Errorf("Ollama saw %d requests, want none", n)
	}
}

func post(t *testing.T, u, body string) (int, string, string) {
	t.Helper()
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b.String()
}

func TestSlotsAreNeverExceeded(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Parallel = 2
	sim.TokensPerSecond = 400
	sim.DefaultTokens = 8
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 2, Sim: sim})
	c := client(t, f.URL)

	const jobs = 40
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	for i := 0; i < jobs; i++ {
		wg.Go(func() {
			stream := false
			errs <- c.Generate(context.Background(), &api.GenerateRequest{Model: "llama3.2", Prompt: "job", Stream: &stream},
				func(api.GenerateResponse) error { return nil })
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a job failed: %v", err)
		}
	}
	// The workers' own reports, from the node bucket.
	f.WaitFor("the node records to count all jobs", func() bool {
		a, b := f.Node(0), f.Node(1)
		return a != nil && b != nil && a.JobsDone+b.JobsDone == jobs
	})
	for i := range 2 {
		n := f.Node(i)
		if n.SlotsPeak > 2 || n.SlotsPeak < 1 || n.JobsDone == 0 {
			t.Errorf("worker %s: peak %d of 2 slots, %d jobs done; want ≤2 slots and some jobs", n.ID, n.SlotsPeak, n.JobsDone)
		}
		if s := f.Sims[i].Stats(); s.MaxActive > 2 {
			t.Errorf("simulator %d ran %d generations at once, want ≤2", i, s.MaxActive)
		}
	}
}

func TestJobWaitsForAWorker(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	c := client(t, f.URL)
	generateText(t, c, &api.GenerateRequest{Model: "llama3.2", Prompt: "warm up"})
	f.StopWorker(0)
	f.WaitFor("the stopped worker to leave the node bucket", func() bool { return len(f.View.Nodes()) == 0 })

	done := make(chan error, 1)
	go func() {
		stream := false
		done <- c.Generate(context.Background(), &api.GenerateRequest{Model: "llama3.2", Prompt: "patience", Stream: &stream},
			func(api.GenerateResponse) error { return nil })
	}()
	f.WaitFor("the job to be queued", func() bool {
		si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		return err == nil && si.CachedInfo().State.Msgs == 1
	})
	select {
	case err := <-done:
		t.Fatalf("request finished with no worker up: %v", err)
	default:
	}
	f.StartWorker(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("queued job failed once a worker came: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("queued job not served after a worker came up")
	}
}

func TestQueueWaitEndsWithAClearError(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, QueueWait: time.Second})
	f.StopWorker(0)
	f.WaitFor("the stopped worker to leave the node bucket", func() bool { return len(f.View.Nodes()) == 0 })
	status, _, body := post(t, f.URL+"/api/generate", `{"model":"llama3.2","prompt":"x"}`)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "no worker took the job within 1s") {
		t.Fatalf("got %d %s, want 503 saying no worker took the job", status, body)
	}
	// The job is not run later for a client that is gone: the dispatcher withdrew it.
	f.WaitFor("the expired job to leave the stream", func() bool {
		si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		return err == nil && si.CachedInfo().State.Msgs == 0
	})
}

func TestKilledWorkersJobIsRedelivered(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, AckWait: 2 * time.Second})
	c := client(t, f.URL)
	// Whichever worker takes the job first hangs in its Ollama; the other answers.
	f.Sims[0].SetFailure(ollamasim.Failure{Hang: true})
	f.Sims[1].SetFailure(ollamasim.Failure{Hang: true})

	done := make(chan error, 1)
	var text strings.Builder
	go func() {
		done <- c.Generate(context.Background(), &api.GenerateRequest{Model: "llama3.2", Prompt: "survive"},
			func(r api.GenerateResponse) error { text.WriteString(r.Response); return nil })
	}()
	var taken int
	f.WaitFor("a worker to take the job", func() bool {
		for i := range 2 {
			if n := f.Node(i); n != nil && n.SlotsBusy == 1 {
				taken = i
				return true
			}
		}
		return false
	})
	other := 1 - taken
	f.Sims[other].SetFailure(ollamasim.Failure{})
	f.KillWorker(taken)

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("job failed after its worker was killed: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("job not redelivered after its worker was killed")
	}
	want, _ := generateText(t, client(t, f.SimURLs[other].String()), &api.GenerateRequest{Model: "llama3.2", Prompt: "survive"})
	if text.String() != strings.Join(want, "") {
		t.Errorf("redelivered answer %q, want %q", text.String(), strings.Join(want, ""))
	}
	if s := f.Sims[other].Stats(); s.Completed < 1 {
		t.Errorf("the surviving worker's Ollama completed %d generations, want the job", s.Completed)
	}
}

func TestClientDisconnectStopsOllama(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	f.Sims[0].SetFailure(ollamasim.Failure{Hang: true}) // A generation that would run forever.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- client(t, f.URL).Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: "long"},
			func(api.GenerateResponse) error { return nil })
	}()
	f.WaitFor("Ollama to be generating", func() bool { return f.Sims[0].Stats().Active == 1 })
	cancel()
	<-done
	fleettest.WaitFor(t, time.Second, "Ollama's request to be canceled (within 1s)", func() bool { return f.Sims[0].Stats().Canceled == 1 })
	f.WaitFor("the job to leave the queue", func() bool {
		si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		return err == nil && si.CachedInfo().State.Msgs == 0
	})
	f.WaitFor("the worker's slot to be free", func() bool { n := f.Node(0); return n != nil && n.SlotsBusy == 0 })
}

// TestSilentWorkerEndsTheAnswer: a worker that started a job and then sends
// nothing (its Ollama hangs) must not hold the client forever: after
// MaxSilence the client gets 504 with the reason, and the job stops on the
// GPU.
func TestSilentWorkerEndsTheAnswer(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Silence: 300 * time.Millisecond})
	f.Sims[0].SetFailure(ollamasim.Failure{Hang: true})
	start := time.Now()
	resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3.2","prompt":"hang"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "the worker went silent") {
		t.Fatalf("got %d %s, want 504 saying the worker went silent", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the answer ended after %s, want about the 300ms bound", d)
	}
	fleettest.WaitFor(t, 2*time.Second, "Ollama's request to be canceled", func() bool { return f.Sims[0].Stats().Canceled == 1 })
}

func TestAbandonedQueuedJobIsNeverRun(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	f.StopWorker(0)
	f.WaitFor("the worker to leave", func() bool { return len(f.View.Nodes()) == 0 })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- client(t, f.URL).Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: "never mind"},
			func(api.GenerateResponse) error { return nil })
	}()
	queued := func(n uint64) func() bool {
		return func() bool {
			si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
			return err == nil && si.CachedInfo().State.Msgs == n
		}
	}
	f.WaitFor("the job to be queued", queued(1))
	cancel()
	<-done
	f.WaitFor("the abandoned job to be removed from the queue", queued(0))
	f.StartWorker(0)
	f.WaitFor("the worker to be back", func() bool { return f.Node(0) != nil })
	// One more job goes through; had the abandoned one survived, it would have run first.
	generateText(t, client(t, f.URL), &api.GenerateRequest{Model: "llama3.2", Prompt: "next"})
	if n := f.Sims[0].Stats().Requests; n != 1 {
		t.Fatalf("Ollama ran %d requests, want only the live one", n)
	}
}

func TestFullQueueRefusesOrWaits(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, MaxQueued: 2})
	f.StopWorker(0)
	f.WaitFor("the worker to leave", func() bool { return len(f.View.Nodes()) == 0 })
	results := make(chan error, 3)
	gen := func() {
		stream := false
		results <- client(t, f.URL).Generate(context.Background(), &api.GenerateRequest{Model: "llama3.2", Prompt: "q", Stream: &stream},
			func(api.GenerateResponse) error { return nil })
	}
	go gen()
	go gen()
	f.WaitFor("two jobs to be queued", func() bool {
		si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
		return err == nil && si.CachedInfo().State.Msgs == 2
	})

	// A third is refused at once, in Ollama's words, with Retry-After.
	resp, err := http.Post(f.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3.2","prompt":"q"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" ||
		string(body) != `{"error":"server busy, please try again.  maximum pending requests exceeded"}` {
		t.Fatalf("full queue: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// One that agrees to wait gets in once a worker drains the queue.
	waiting := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", f.URL+"/api/generate", strings.NewReader(`{"model":"llama3.2","prompt":"q","stream":false}`))
		req.Header.Set("Ollamaq-Queue-Full-Wait", "20s")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			waiting <- 0
			return
		}
		resp.Body.Close()
		waiting <- resp.StatusCode
	}()
	f.StartWorker(0)
	if status := <-waiting; status != 200 {
		t.Fatalf("waiting request got %d, want 200", status)
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("a queued job failed: %v", err)
		}
	}
}

func TestWorkerLostMidStreamOnARouteThatCannotContinue(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond = 20
	sim.DefaultTokens = 60 // Three seconds of streaming.
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Sim: sim, AckWait: time.Second})
	resp, err := http.Post(f.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"llama3.2","prompt":"Once upon a time","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read the first event, then kill whichever worker streams it.
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if f.Sims[i].Stats().Active == 1 {
			f.KillWorker(i)
		}
	}
	rest, _ := io.ReadAll(resp.Body)
	body := string(buf[:n]) + string(rest)
	if !strings.Contains(body, `data: {"error":{"message":"the worker serving this request was lost after`) ||
		!strings.Contains(body, "cannot be continued") {
		t.Fatalf("stream ended with %q, want an explicit error event", tail(body))
	}
	if strings.Count(body, "data: [DONE]") != 0 {
		t.Errorf("a broken stream claimed [DONE]")
	}
}

func tail(s string) string {
	if len(s) > 300 {
		return s[len(s)-300:]
	}
	return s
}

func TestOllamaClientEmbeddings(t *testing.T) {
	sim := ollamasim.DefaultConfig()
	sim.Models = append(sim.Models, ollamasim.Model{Name: "nomic-embed-text:latest", Capabilities: []string{"embedding"}})
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim})
	viaQueue, direct := client(t, f.URL), client(t, f.SimURLs[0].String())
	req := &api.EmbedRequest{Model: "nomic-embed-text", Input: []string{"the sky", "the sea"}}
	got, err := viaQueue.Embed(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want, err := direct.Embed(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Embeddings) != 2 || fmt.Sprint(got.Embeddings) != fmt.Sprint(want.Embeddings) {
		t.Errorf("embeddings through the queue %v, Ollama's %v", got.Embeddings, want.Embeddings)
	}
	legacy, err := viaQueue.Embeddings(t.Context(), &api.EmbeddingRequest{Model: "nomic-embed-text", Prompt: "the sky"})
	if err != nil || len(legacy.Embedding) == 0 {
		t.Errorf("legacy embeddings: %v, %v", legacy, err)
	}
	var se api.StatusError
	if _, err := viaQueue.Embed(t.Context(), &api.EmbedRequest{Model: "nope", Input: "x"}); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("embed with an unknown model: %v, want 404", err)
	}
}
