package ollamasim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// psNames lists the models /api/ps shows, sorted.
func psNames(t *testing.T, c *api.Client) []string {
	t.Helper()
	ps, err := c.ListRunning(t.Context())
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	var names []string
	for _, m := range ps.Models {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	return names
}

func keep(d time.Duration) *api.Duration { return &api.Duration{Duration: d} }

// words returns n distinct words starting with prefix.
func words(prefix string, n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return strings.Join(w, " ")
}

func TestLoadDurationPerModel(t *testing.T) {
	cfg := fastConfig() // llama3.2 is Loaded; nomic-embed-text and qwen3:8b are not
	cfg.LoadDuration = 40 * time.Millisecond
	cfg.Models[2].LoadDuration = 150 * time.Millisecond // qwen3:8b
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	const slow = 150 * time.Millisecond

	gen := func(ka *api.Duration) api.Metrics {
		return runGenerate(t, c, api.GenerateRequest{Model: "qwen3:8b", Prompt: "hi", KeepAlive: ka}).final
	}
	if m := gen(nil); m.LoadDuration < slow {
		t.Errorf("first use: load_duration %v, want at least the model's own %v", m.LoadDuration, slow)
	}
	if m := gen(nil); m.LoadDuration >= slow/2 {
		t.Errorf("loaded: load_duration %v, want well under %v", m.LoadDuration, slow)
	}

	// Unloaded by an empty request with keep_alive 0: the next one loads again.
	var unload api.GenerateResponse
	if err := c.Generate(t.Context(), &api.GenerateRequest{Model: "qwen3:8b", KeepAlive: keep(0)}, func(r api.GenerateResponse) error {
		unload = r
		return nil
	}); err != nil || unload.DoneReason != "unload" {
		t.Fatalf("unload: %+v, %v", unload, err)
	}
	if got := psNames(t, c); slices.Contains(got, "qwen3:8b") {
		t.Fatalf("ps after unload = %v, want no qwen3:8b", got)
	}
	if m := gen(nil); m.LoadDuration < slow {
		t.Errorf("after unload: load_duration %v, want at least %v again", m.LoadDuration, slow)
	}

	// Unloaded after answering a request with keep_alive 0.
	if m := gen(keep(0)); m.LoadDuration >= slow/2 {
		t.Errorf("keep_alive 0 on a loaded model: load_duration %v, want well under %v", m.LoadDuration, slow)
	}
	if got := psNames(t, c); slices.Contains(got, "qwen3:8b") {
		t.Fatalf("ps after keep_alive 0 = %v, want no qwen3:8b", got)
	}
	if m := gen(keep(time.Millisecond)); m.LoadDuration < slow {
		t.Errorf("after keep_alive 0: load_duration %v, want at least %v again", m.LoadDuration, slow)
	}

	// Expired: its keep-alive of 1ms ran out.
	waitFor(t, "qwen3:8b to expire", func() bool { return !slices.Contains(psNames(t, c), "qwen3:8b") })
	if m := gen(nil); m.LoadDuration < slow {
		t.Errorf("after expiry: load_duration %v, want at least %v again", m.LoadDuration, slow)
	}

	// The other models take Config.LoadDuration; a Loaded one none.
	emb, err := c.Embed(t.Context(), &api.EmbedRequest{Model: "nomic-embed-text", Input: "x"})
	if err != nil || emb.LoadDuration < cfg.LoadDuration || emb.LoadDuration >= slow {
		t.Errorf("embed: load_duration %v, %v; want the default %v", emb.LoadDuration, err, cfg.LoadDuration)
	}
	if m := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: "hi"}).final; m.LoadDuration >= cfg.LoadDuration {
		t.Errorf("Loaded model: load_duration %v, want under %v", m.LoadDuration, cfg.LoadDuration)
	}
	if got := sim.Stats(); got.Loads != 5 || got.Evictions != 0 {
		t.Errorf("stats = %+v, want 5 loads (qwen3:8b four times, nomic-embed-text once) and no evictions", got)
	}
}

func TestEvictionAtMaxLoadedModels(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = []ollamasim.Model{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	cfg.MaxLoadedModels = 2
	cfg.LoadDuration = 20 * time.Millisecond
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	gen := func(name string, ka *api.Duration) api.Metrics {
		return runGenerate(t, c, api.GenerateRequest{Model: name, Prompt: "hi", KeepAlive: ka}).final
	}

	gen("a", nil)
	gen("b", nil)
	gen("a", nil) // b is now the least recently used
	if got := psNames(t, c); !slices.Equal(got, []string{"a:latest", "b:latest"}) {
		t.Fatalf("ps = %v, want a and b", got)
	}
	before := time.Now()
	if m := gen("c", nil); m.LoadDuration < cfg.LoadDuration {
		t.Errorf("c: load_duration %v, want at least %v", m.LoadDuration, cfg.LoadDuration)
	}
	if got := psNames(t, c); !slices.Equal(got, []string{"a:latest", "c:latest"}) {
		t.Fatalf("ps after loading c = %v, want a and c (b evicted, least recently used)", got)
	}
	ps, err := c.ListRunning(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ps.Models {
		if m.Size <= 0 || m.SizeVRAM != m.Size {
			t.Errorf("ps %s: size %d, size_vram %d; want all of it in VRAM", m.Name, m.Size, m.SizeVRAM)
		}
		if m.Name == "c:latest" && (m.ExpiresAt.Before(before.Add(5*time.Minute)) || m.ExpiresAt.After(time.Now().Add(5*time.Minute))) {
			t.Errorf("ps c: expires_at %v, want five minutes after its request", m.ExpiresAt)
		}
	}
	if got := sim.Stats(); got.Loads != 3 || got.Evictions != 1 {
		t.Errorf("stats = %+v, want 3 loads and 1 eviction", got)
	}

	// The shortest keep-alive goes first, before the least recently used:
	// c (5m) is older than a (now 2m), yet a goes.
	gen("a", keep(2*time.Minute))
	if m := gen("b", nil); m.LoadDuration < cfg.LoadDuration {
		t.Errorf("b again: load_duration %v, want at least %v (it was evicted)", m.LoadDuration, cfg.LoadDuration)
	}
	if got := psNames(t, c); !slices.Equal(got, []string{"b:latest", "c:latest"}) {
		t.Fatalf("ps after loading b = %v, want b and c (a, with the shortest keep-alive, evicted)", got)
	}
	if got := sim.Stats(); got.Loads != 4 || got.Evictions != 2 {
		t.Errorf("stats = %+v, want 4 loads and 2 evictions", got)
	}
}

func TestBusyModelIsNotEvicted(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = []ollamasim.Model{{Name: "a"}, {Name: "b"}}
	cfg.MaxLoadedModels = 1
	cfg.Parallel = 2 // slots are not what b waits for
	cfg.TokensPerSecond = 1000
	cfg.LoadDuration = 20 * time.Millisecond
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	runGenerate(t, c, api.GenerateRequest{Model: "a", Prompt: "hi", Options: map[string]any{"num_predict": 1}})

	// A long generation on a.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var streamed atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before waiting
	wg.Go(func() {
		_ = c.Generate(ctx, &api.GenerateRequest{Model: "a", Prompt: "long", Options: map[string]any{"num_predict": 1_000_000}},
			func(api.GenerateResponse) error { streamed.Add(1); return nil })
	})
	waitFor(t, "a to stream", func() bool { return streamed.Load() > 0 })

	type answer struct {
		m   api.Metrics
		err error
	}
	bDone := make(chan answer, 1)
	wg.Go(func() {
		var a answer
		a.err = c.Generate(t.Context(), &api.GenerateRequest{Model: "b", Prompt: "hi", Options: map[string]any{"num_predict": 1}},
			func(r api.GenerateResponse) error { a.m = r.Metrics; return nil })
		bDone <- a
	})
	waitFor(t, "b to arrive", func() bool { return sim.Stats().Requests == 3 })
	arrived := time.Now() // b's request started before this

	// While a streams, b waits for it and a stays in /api/ps.
	n := streamed.Load()
	waitFor(t, "a to stream on", func() bool { return streamed.Load() >= n+20 })
	select {
	case a := <-bDone:
		t.Fatalf("b answered (%+v, %v) while a was busy", a.m, a.err)
	default:
	}
	if got := psNames(t, c); !slices.Equal(got, []string{"a:latest"}) {
		t.Fatalf("ps while b waits = %v, want only a", got)
	}

	// A request for a still runs on it meanwhile, as in Ollama.
	if m := runGenerate(t, c, api.GenerateRequest{Model: "a", Prompt: "more", Options: map[string]any{"num_predict": 2}}).final; m.LoadDuration >= cfg.LoadDuration {
		t.Errorf("a joined while being evicted: load_duration %v, want under %v", m.LoadDuration, cfg.LoadDuration)
	}
	select {
	case a := <-bDone:
		t.Fatalf("b answered (%+v, %v) while a was busy", a.m, a.err)
	default:
	}

	// a's last request ends: a unloads, b loads.
	stopped := time.Now()
	cancel()
	b := <-bDone
	if b.err != nil {
		t.Fatalf("b: %v", b.err)
	}
	if want := stopped.Sub(arrived) + cfg.LoadDuration; b.m.LoadDuration < want {
		t.Errorf("b: load_duration %v, want at least the wait for a and its own load, %v", b.m.LoadDuration, want)
	}
	if got := psNames(t, c); !slices.Equal(got, []string{"b:latest"}) {
		t.Errorf("ps after b = %v, want only b", got)
	}
	if got := sim.Stats(); got.Loads != 2 || got.Evictions != 1 {
		t.Errorf("stats = %+v, want 2 loads and 1 eviction", got)
	}
}

// cacheConfig evaluates prompts at 2,000 tokens a second, so 400 tokens
// take 200ms and a handful a few milliseconds.
func cacheConfig() ollamasim.Config {
	cfg := fastConfig()
	cfg.PromptTokensPerSecond = 2000
	cfg.DefaultTokens = 10
	return cfg
}

const longPrompt = 400 // words, 200ms at cacheConfig's pace

func TestPromptCacheFollowUpTurn(t *testing.T) {
	sim := ollamasim.New(cacheConfig())
	_, c := start(t, sim)
	full := 400 * time.Second / 2000

	// chat sends msgs and returns the answer and the time to its first chunk.
	chat := func(msgs []api.Message) (generated, time.Duration) {
		t.Helper()
		sent := time.Now()
		var first time.Duration
		var g generated
		err := c.Chat(t.Context(), &api.ChatRequest{Model: "llama3.2", Messages: msgs}, func(r api.ChatResponse) error {
			if first == 0 {
				first = time.Since(sent)
			}
			g.text += r.Message.Content
			if r.Done {
				g.done, g.final = true, r.Metrics
			}
			return nil
		})
		if err != nil || !g.done {
			t.Fatalf("chat: %v, done %v", err, g.done)
		}
		return g, first
	}

	turn1 := []api.Message{{Role: "user", Content: words("w", longPrompt)}}
	g1, first1 := chat(turn1)
	if g1.final.PromptEvalCount != longPrompt || g1.final.PromptEvalDuration < full {
		t.Fatalf("turn 1: prompt_eval_count %d in %v, want %d in at least %v", g1.final.PromptEvalCount, g1.final.PromptEvalDuration, longPrompt, full)
	}
	answer := len(strings.Fields(g1.text))

	// The next turn repeats the conversation and adds three words: only
	// those and the answer's last token are evaluated, but the count is the
	// whole prompt, as Ollama 0.32 reports it.
	turn2 := append(slices.Clone(turn1), api.Message{Role: "assistant", Content: g1.text}, api.Message{Role: "user", Content: "and then what"})
	g2, first2 := chat(turn2)
	if want := longPrompt + answer + 3; g2.final.PromptEvalCount != want {
		t.Errorf("turn 2: prompt_eval_count %d, want the whole prompt, %d", g2.final.PromptEvalCount, want)
	}
	if g2.final.PromptEvalDuration >= full/4 {
		t.Errorf("turn 2: prompt_eval_duration %v, want a fraction of turn 1's %v", g2.final.PromptEvalDuration, g1.final.PromptEvalDuration)
	}
	if first2 >= first1/2 {
		t.Errorf("turn 2: first chunk after %v, want well before turn 1's %v", first2, first1)
	}
	want := ollamasim.Stats{CacheHits: 1, CachedTokens: int64(longPrompt + answer - 1)}
	if got := sim.Stats(); got.CacheHits != want.CacheHits || got.CachedTokens != want.CachedTokens {
		t.Errorf("after turn 2: %d hits, %d cached tokens; want %d, %d", got.CacheHits, got.CachedTokens, want.CacheHits, want.CachedTokens)
	}

	// Another conversation finds nothing.
	g3, _ := chat([]api.Message{{Role: "user", Content: words("v", longPrompt)}})
	if g3.final.PromptEvalDuration < full {
		t.Errorf("other conversation: prompt_eval_duration %v, want at least %v", g3.final.PromptEvalDuration, full)
	}
	// The same turn again reuses all of it but one token; so does a
	// conversation that ends where the kept one did, as an edited last
	// message would not.
	g4, _ := chat(turn2)
	if g4.final.PromptEvalDuration >= full/4 {
		t.Errorf("repeated turn: prompt_eval_duration %v, want a fraction of %v", g4.final.PromptEvalDuration, full)
	}
	edited := slices.Clone(turn1)
	edited[0].Content = "changed " + edited[0].Content
	if g5, _ := chat(edited); g5.final.PromptEvalDuration < full {
		t.Errorf("edited first message: prompt_eval_duration %v, want at least %v", g5.final.PromptEvalDuration, full)
	}
	got := sim.Stats()
	wantCached := int64(longPrompt+answer-1) + int64(g2.final.PromptEvalCount-1)
	if got.CacheHits != 2 || got.CachedTokens != wantCached {
		t.Errorf("stats = %+v, want 2 hits and %d cached tokens", got, wantCached)
	}
	wantPrompt := int64(g1.final.PromptEvalCount + g2.final.PromptEvalCount + g3.final.PromptEvalCount + g4.final.PromptEvalCount + longPrompt + 1)
	if got.PromptTokens != wantPrompt {
		t.Errorf("PromptTokens = %d, want the sum of prompt_eval_count, %d", got.PromptTokens, wantPrompt)
	}
}

func TestPromptCacheGenerateContext(t *testing.T) {
	sim := ollamasim.New(cacheConfig())
	_, c := start(t, sim)
	full := 400 * time.Second / 2000

	g1 := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: words("w", longPrompt)})
	if len(g1.context) != longPrompt+len(strings.Fields(g1.text)) {
		t.Fatalf("context has %d ids, want the prompt's %d and the answer's %d", len(g1.context), longPrompt, len(strings.Fields(g1.text)))
	}
	// The context carries the conversation: a follow-up with it reuses it.
	g2 := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: "go on", Context: g1.context})
	if g2.final.PromptEvalCount != len(g1.context)+2 || g2.final.PromptEvalDuration >= full/4 {
		t.Errorf("follow-up: prompt_eval_count %d in %v, want %d in a fraction of %v", g2.final.PromptEvalCount, g2.final.PromptEvalDuration, len(g1.context)+2, full)
	}
	// As in Ollama, the context returned holds the whole conversation.
	if want := len(g1.context) + 2 + len(strings.Fields(g2.text)); len(g2.context) != want || !slices.Equal(g2.context[:len(g1.context)], g1.context) {
		t.Errorf("follow-up context has %d ids, want the previous %d, the prompt's 2 and the answer's", len(g2.context), len(g1.context))
	}
	g3 := runGenerate(t, c, api.GenerateRequest{Model: "llama3.2", Prompt: "and on", Context: g2.context})
	if g3.final.PromptEvalDuration >= full/4 {
		t.Errorf("third turn: prompt_eval_duration %v, want a fraction of %v", g3.final.PromptEvalDuration, full)
	}
	if got := sim.Stats(); got.CacheHits != 2 || got.CachedTokens != int64(len(g1.context)-1+len(g2.context)-1) {
		t.Errorf("stats = %+v, want 2 hits of %d and %d tokens", got, len(g1.context)-1, len(g2.context)-1)
	}
}

func TestPromptCacheLostOnUnload(t *testing.T) {
	cfg := cacheConfig()
	cfg.Models = []ollamasim.Model{{Name: "a"}, {Name: "b"}}
	cfg.MaxLoadedModels = 1
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	full := 400 * time.Second / 2000

	conv := []api.Message{{Role: "user", Content: words("w", longPrompt)}}
	turn := func(name string) api.Metrics {
		g := runChat(t, c, api.ChatRequest{Model: name, Messages: conv})
		conv = append(conv, api.Message{Role: "assistant", Content: g.text}, api.Message{Role: "user", Content: "more"})
		return g.final
	}
	turn("a")
	if m := turn("a"); m.PromptEvalDuration >= full/4 {
		t.Fatalf("second turn on a: prompt_eval_duration %v, want a fraction of %v", m.PromptEvalDuration, full)
	}

	// b evicts a, and a's cache goes with it.
	runGenerate(t, c, api.GenerateRequest{Model: "b", Prompt: "hi"})
	if m := turn("a"); m.PromptEvalDuration < full {
		t.Errorf("after eviction: prompt_eval_duration %v, want the whole prompt again (at least %v)", m.PromptEvalDuration, full)
	}
	if got := sim.Stats(); got.CacheHits != 1 || got.Evictions != 2 || got.Loads != 3 {
		t.Errorf("stats = %+v, want 1 hit, 3 loads, 2 evictions (a by b, b by a)", got)
	}

	// The reloaded a caches again; an unload empties it too.
	if m := turn("a"); m.PromptEvalDuration >= full/4 {
		t.Errorf("after reload: prompt_eval_duration %v, want a fraction of %v", m.PromptEvalDuration, full)
	}
	if err := c.Generate(t.Context(), &api.GenerateRequest{Model: "a", KeepAlive: keep(0)}, func(api.GenerateResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if m := turn("a"); m.PromptEvalDuration < full {
		t.Errorf("after unload: prompt_eval_duration %v, want at least %v", m.PromptEvalDuration, full)
	}
	if got := sim.Stats(); got.CacheHits != 2 {
		t.Errorf("stats = %+v, want 2 hits", got)
	}
}

func TestPromptCacheSlots(t *testing.T) {
	// Each conversation is kept under its own first word.
	conv := func(w string) []api.Message { return []api.Message{{Role: "user", Content: w + " is where it starts"}} }
	follow := func(t *testing.T, c *api.Client, msgs []api.Message) []api.Message {
		t.Helper()
		g := runChat(t, c, api.ChatRequest{Model: "llama3.2", Messages: msgs})
		return append(slices.Clone(msgs), api.Message{Role: "assistant", Content: g.text}, api.Message{Role: "user", Content: "next"})
	}

	t.Run("least recently used goes", func(t *testing.T) {
		cfg := fastConfig()
		cfg.PromptCacheSlots = 2
		sim := ollamasim.New(cfg)
		_, c := start(t, sim)
		x := follow(t, c, conv("x"))
		follow(t, c, conv("y"))
		z := follow(t, c, conv("z")) // x's prompt makes room
		follow(t, c, x)
		if got := sim.Stats(); got.CacheHits != 0 {
			t.Fatalf("x's next turn found %d cached tokens, want none (x was the least recently used of 3 for 2 slots)", got.CachedTokens)
		}
		follow(t, c, z)
		if got := sim.Stats(); got.CacheHits != 1 {
			t.Errorf("z's next turn: %d hits, want 1", got.CacheHits)
		}
	})
	t.Run("off", func(t *testing.T) {
		cfg := fastConfig()
		cfg.PromptCacheSlots = -1
		sim := ollamasim.New(cfg)
		_, c := start(t, sim)
		follow(t, c, follow(t, c, conv("x")))
		if got := sim.Stats(); got.CacheHits != 0 || got.PromptTokens == 0 {
			t.Errorf("stats = %+v, want prompt tokens and no hits", got)
		}
	})
	t.Run("thinking is cached but not sent back", func(t *testing.T) {
		// The answer's thinking is in the cache after the prompt, and the
		// next turn's history has only the content: the prompt is reused,
		// the answer is not, as with templates that drop earlier thinking.
		sim := ollamasim.New(fastConfig())
		_, c := start(t, sim)
		msgs := []api.Message{{Role: "user", Content: "why is the sky blue"}}
		g := runChat(t, c, api.ChatRequest{Model: "qwen3:8b", Messages: msgs})
		if g.thinking == "" {
			t.Fatal("qwen3:8b did not think; this test needs it to")
		}
		msgs = append(msgs, api.Message{Role: "assistant", Content: g.text, Thinking: g.thinking}, api.Message{Role: "user", Content: "next"})
		runChat(t, c, api.ChatRequest{Model: "qwen3:8b", Messages: msgs})
		if got := sim.Stats(); got.CacheHits != 1 || got.CachedTokens != 5 {
			t.Errorf("stats = %+v, want 1 hit of the 5 prompt words", got)
		}
	})
}

func TestLoadQueueBound(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = []ollamasim.Model{{Name: "a"}, {Name: "b"}}
	cfg.LoadDuration = time.Minute
	cfg.MaxQueue = -1 // nobody may wait for a load
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before waiting
	for _, name := range []string{"a", "b"} {
		wg.Go(func() {
			errs <- c.Generate(ctx, &api.GenerateRequest{Model: name, Prompt: "hi"}, func(api.GenerateResponse) error { return nil })
		})
	}
	// One loads for a minute, the other is turned away; which is which
	// depends on arrival order.
	var se api.StatusError
	if err := <-errs; !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable || se.ErrorMessage != "server busy, please try again.  maximum pending requests exceeded" {
		t.Errorf("error = %#v, want 503 with Ollama's max-queue message", err)
	}
	cancel()
	wg.Wait()
	waitFor(t, "the load to be canceled", func() bool { return sim.Stats().Canceled == 1 })
	if got := sim.Stats(); got.Loads != 0 || len(psNames(t, c)) != 0 {
		t.Errorf("stats = %+v, ps %v; want nothing loaded", got, psNames(t, c))
	}
}

func TestSetModelsKeepsMaxLoadedModels(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = nil
	cfg.MaxLoadedModels = 1
	sim := ollamasim.New(cfg)
	_, c := start(t, sim)
	sim.SetModels([]ollamasim.Model{{Name: "a", Loaded: true}, {Name: "b", Loaded: true}})
	if got := psNames(t, c); !slices.Equal(got, []string{"a:latest"}) {
		t.Errorf("ps = %v, want only the first Loaded model within MaxLoadedModels", got)
	}
}
