package ollamasim_test

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

func TestParallelLimit(t *testing.T) {
	cfg := fastConfig()
	cfg.Parallel = 2
	cfg.TokensPerSecond = 1000 // 10 tokens take ~10ms, so requests overlap
	cfg.DefaultTokens = 10
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)

	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req := api.GenerateRequest{Model: "llama3.2", Prompt: strings.Repeat("x ", i+1)}
			if i%2 == 1 {
				req.Stream = ptr(false)
			}
			errs <- c.Generate(t.Context(), &req, func(api.GenerateResponse) error { return nil })
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("generate: %v", err)
		}
	}
	got := sim.Stats()
	if got.MaxActive != 2 {
		t.Errorf("MaxActive = %d, want exactly Parallel (2)", got.MaxActive)
	}
	if got.Requests != n || got.Completed != n || got.Active != 0 || got.Canceled != 0 || got.Tokens != n*10 {
		t.Errorf("stats = %+v, want %d requests completed with %d tokens", got, n, n*10)
	}
}

func TestMaxQueue(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxQueue = 1
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	sim.SetFailure(ollamasim.Failure{Hang: true})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		_ = c.Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: "hang"}, func(api.GenerateResponse) error { return nil })
	})
	waitFor(t, "the first request to hold the only slot", func() bool { return sim.Stats().Active == 1 })

	// Of the next two, one waits in the queue of one and the other is turned
	// away; which is which depends on arrival order.
	busy := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			err := c.Generate(ctx, &api.GenerateRequest{Model: "llama3.2", Prompt: "queued"}, func(api.GenerateResponse) error { return nil })
			busy <- err
		})
	}
	var err error
	select {
	case err = <-busy:
	case <-time.After(3 * time.Second):
		t.Fatal("no request was turned away")
	}
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable || se.ErrorMessage != "server busy, please try again.  maximum pending requests exceeded" {
		t.Errorf("error = %#v, want 503 with Ollama's max-queue message", err)
	}
	cancel()
	wg.Wait()
	waitFor(t, "the hung and the queued request to be canceled", func() bool {
		got := sim.Stats()
		return got.Active == 0 && got.Canceled == 2
	})
	if got := sim.Stats(); got.MaxActive != 1 || got.Requests != 3 {
		t.Errorf("stats = %+v, want 3 requests and at most 1 active", got)
	}
}

func TestFailureInjection(t *testing.T) {
	tests := []struct {
		name            string
		failure         ollamasim.Failure
		path, body      string
		wantStatus      int
		wantContentType string
		wantBody        string
	}{
		{
			name:    "status on streaming generate",
			failure: ollamasim.Failure{Status: 500, Message: "boom"},
			path:    "/api/generate", body: `{"model":"llama3.2","prompt":"hi"}`,
			wantStatus: 500, wantContentType: "application/json", wantBody: `{"error":"boom"}`,
		},
		{
			name:    "status on non-streaming chat",
			failure: ollamasim.Failure{Status: 503, Message: "overloaded"},
			path:    "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}`,
			wantStatus: 503, wantContentType: jsonUTF8, wantBody: `{"error":"overloaded"}`,
		},
		{
			name:    "status on embed",
			failure: ollamasim.Failure{Status: 500},
			path:    "/api/embed", body: `{"model":"nomic-embed-text","input":"x"}`,
			wantStatus: 500, wantContentType: jsonUTF8,
			wantBody: `{"error":"model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details"}`,
		},
		{
			name:    "validation still wins",
			failure: ollamasim.Failure{Status: 500, Message: "boom"},
			path:    "/api/generate", body: `{"model":"nope","prompt":"hi"}`,
			wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`,
		},
		{
			name:    "after tokens mid-stream",
			failure: ollamasim.Failure{AfterTokens: 2, Message: "runner died"},
			path:    "/api/chat", body: `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}`,
			wantStatus: 200, wantContentType: "application/x-ndjson",
		},
		{
			name:    "after tokens non-streaming",
			failure: ollamasim.Failure{AfterTokens: 2, Message: "runner died"},
			path:    "/api/generate", body: `{"model":"llama3.2","prompt":"hi","stream":false}`,
			wantStatus: 500, wantContentType: jsonUTF8, wantBody: `{"error":"runner died"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ollamasim.New(fastConfig())
			base, _ := start(t, sim)
			sim.SetFailure(tt.failure)
			r := do(t, base, "POST", tt.path, tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType {
				t.Errorf("status %d, content type %q; want %d, %q", r.status, r.contentType, tt.wantStatus, tt.wantContentType)
			}
			if tt.wantBody != "" && r.body != tt.wantBody {
				t.Errorf("body = %s, want %s", r.body, tt.wantBody)
			}
			if tt.failure.AfterTokens > 0 && tt.wantStatus == 200 {
				lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
				if len(lines) != 3 || lines[2] != `{"error":"runner died"}` || strings.Contains(r.body, `"done":true`) {
					t.Errorf("body = %q, want 2 token lines then the error line and no done line", r.body)
				}
			}
			if got := sim.Stats(); got.Completed != 0 {
				t.Errorf("Completed = %d, want 0 for a failed request", got.Completed)
			}
		})
	}

	t.Run("go client sees the mid-stream error", func(t *testing.T) {
		sim := ollamasim.New(fastConfig())
		_, c := start(t, sim)
		sim.SetFailure(ollamasim.Failure{AfterTokens: 3, Message: "runner died"})
		var chunks int
		err := c.Generate(t.Context(), &api.GenerateRequest{Model: "llama3.2", Prompt: "hi"}, func(api.GenerateResponse) error {
			chunks++
			return nil
		})
		if err == nil || err.Error() != "runner died" || chunks != 3 {
			t.Errorf("err = %v after %d chunks, want \"runner died\" after 3", err, chunks)
		}
		sim.SetFailure(ollamasim.Failure{})
		if g := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: "hi"}); !g.done {
			t.Errorf("clearing the failure did not restore service")
		}
	})
}

func TestClientGoesAway(t *testing.T) {
	tests := []struct {
		name    string
		failure ollamasim.Failure
		body    string
	}{
		{"mid-stream", ollamasim.Failure{}, `{"model":"llama3.2","prompt":"hi","options":{"num_predict":100000}}`},
		{"hung runner", ollamasim.Failure{Hang: true}, `{"model":"llama3.2","prompt":"hi"}`},
		{"hung load", ollamasim.Failure{Hang: true}, `{"model":"llama3.2"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.TokensPerSecond = 1000
			sim := ollamasim.New(cfg)
			base, _ := start(t, sim)
			sim.SetFailure(tt.failure)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", base+"/api/generate", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				if sc.Scan() {
					cancel() // got a token: hang up mid-stream
				}
			}()
			if tt.failure.Hang {
				waitFor(t, "the request to arrive", func() bool { return sim.Stats().Requests == 1 })
				cancel()
			}
			<-done
			waitFor(t, "the server to notice", func() bool { return sim.Stats().Canceled == 1 })
			if got := sim.Stats(); got.Active != 0 || got.Completed != 0 {
				t.Errorf("stats = %+v, want nothing active or completed", got)
			}
		})
	}
}

func TestLoadDuration(t *testing.T) {
	cfg := fastConfig()
	cfg.LoadDuration = 30 * time.Millisecond
	_, c := start(t, ollamasim.New(cfg))
	first := runGenerate(t, c, api.GenerateRequest{Model: "qwen3:8b", Prompt: "hi"})
	if first.final.LoadDuration < cfg.LoadDuration {
		t.Errorf("first load_duration = %v, want >= %v", first.final.LoadDuration, cfg.LoadDuration)
	}
	second := runGenerate(t, c, api.GenerateRequest{Model: "qwen3:8b", Prompt: "hi"})
	if second.final.LoadDuration >= cfg.LoadDuration {
		t.Errorf("second load_duration = %v, want well under %v once loaded", second.final.LoadDuration, cfg.LoadDuration)
	}
}

func TestSetModels(t *testing.T) {
	sim := ollamasim.New(fastConfig())
	_, c := start(t, sim)
	sim.SetModels([]ollamasim.Model{{Name: "mistral", Loaded: true}})
	list, err := c.List(t.Context())
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "mistral:latest" {
		t.Fatalf("list = %+v, %v; want only mistral:latest", list, err)
	}
	ps, err := c.ListRunning(t.Context())
	if err != nil || len(ps.Models) != 1 || ps.Models[0].Name != "mistral:latest" {
		t.Errorf("ps = %+v, %v; want only mistral:latest", ps, err)
	}
	err = c.Generate(t.Context(), &api.GenerateRequest{Model: "llama3.2", Prompt: "hi"}, func(api.GenerateResponse) error { return nil })
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Errorf("generate on a removed model: %v, want 404", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ollamasim.Config
		wantErr string
	}{
		{"default", ollamasim.DefaultConfig(), ""},
		{"bad name", ollamasim.Config{Models: []ollamasim.Model{{Name: "bad name!"}}}, "Models[0].Name"},
		{"duplicate", ollamasim.Config{Models: []ollamasim.Model{{Name: "a"}, {Name: "A:latest"}}}, "listed twice"},
		{"bad digest", ollamasim.Config{Models: []ollamasim.Model{{Name: "a", Digest: "abc"}}}, "Models[0].Digest"},
		{"bad capability", ollamasim.Config{Models: []ollamasim.Model{{Name: "a", Capabilities: []string{"flying"}}}}, "unknown capability"},
		{"negative parallel", ollamasim.Config{Parallel: -1}, "Parallel"},
		{"negative max loaded", ollamasim.Config{MaxLoadedModels: -1}, "MaxLoadedModels"},
		{"negative prompt pace", ollamasim.Config{PromptTokensPerSecond: -1}, "PromptTokensPerSecond"},
		{"prompt pace not a number", ollamasim.Config{PromptTokensPerSecond: math.NaN()}, "PromptTokensPerSecond"},
		{"more loaded than allowed", ollamasim.Config{MaxLoadedModels: 1, Models: []ollamasim.Model{{Name: "a", Loaded: true}, {Name: "b", Loaded: true}}}, "more than MaxLoadedModels"},
		{"as many loaded as allowed", ollamasim.Config{MaxLoadedModels: 2, Models: []ollamasim.Model{{Name: "a", Loaded: true}, {Name: "b", Loaded: true}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}
