package ollamasim_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"

	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// A simulator behind httptest, driven by Ollama's own Go client. The text
// is a pure function of the request and Config.Seed, so this output is stable.
func Example() {
	cfg := ollamasim.DefaultConfig()
	cfg.TokensPerSecond = -1 // no pacing
	sim := ollamasim.New(cfg)
	ts := httptest.NewServer(sim)
	defer ts.Close()

	u, _ := url.Parse(ts.URL)
	client := api.NewClient(u, ts.Client())
	stream := false
	req := &api.GenerateRequest{Model: "llama3.2", Prompt: "Say hi", Stream: &stream, Options: map[string]any{"num_predict": 5}}
	err := client.Generate(context.Background(), req, func(r api.GenerateResponse) error {
		fmt.Printf("%q %s %d\n", r.Response, r.DoneReason, r.EvalCount)
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	fmt.Printf("%+v\n", sim.Stats())
	// Output:
	// "Window after north under ocean " length 5
	// {Requests:1 Active:0 MaxActive:1 Completed:1 Canceled:0 Tokens:5 Loads:1 Evictions:0 PromptTokens:2 CacheHits:0 CachedTokens:0}
}
