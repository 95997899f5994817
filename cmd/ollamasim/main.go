// Command ollamasim serves a simulated Ollama for tests, demos and benchmarks:
// it answers the Ollama API with deterministic text at a configurable pace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ollama/ollama/types/model"

	"github.com/ollamamax/ollamamax/internal/cli"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

const synopsis = `Usage: ollamasim [flags]

Serves a simulated Ollama 0.32.15: /api/generate, /api/chat, /api/embed,
/api/embeddings, /api/tags, /api/ps, /api/show, /api/version, /api/status,
/api/pull, /api/copy, /api/delete, the OpenAI-compatible /v1/chat/completions,
/v1/completions, /v1/embeddings, /v1/models, /v1/responses and
/v1/audio/transcriptions, and the Anthropic-compatible /v1/messages behave like
Ollama on the wire, with deterministic text paced at --tps tokens per second
per stream. Models whose name contains "embed" are embedding models; the others
generate text. Any name can be pulled, in --pull time, except those containing
"missing", which fail like an unknown model. Cloud models (name:cloud),
/api/experimental/web_search and web_fetch fail as on an Ollama without
internet. Like a model decoding greedily, it continues its own partial answers:
a chat (or Messages or Responses request) ending in an assistant message, or a
raw prompt made of a _debug_render_only rendering and a partial answer, gets
the rest of that answer.

Models behave like Ollama's scheduler keeps them: a model loads on first use
(--load, or its own time from --model-load), stays for its keep_alive, and
loads again after it was unloaded. With --max-loaded-models, loading one more
evicts an idle model (the shortest keep_alive, then the least recently used),
or waits for a busy one to finish. Each loaded model keeps --prompt-cache
prompts: a chat turn that extends an earlier one on this server evaluates only
the new tokens, at --prompt-tps (prompt_eval_duration shrinks; as in Ollama
0.32, prompt_eval_count still counts the whole prompt).

Examples:
  ollamasim                                        # llama3.2 on 127.0.0.1:11534
  ollamasim --models llama3.2,qwen3:8b,nomic-embed-text --tps 200 --parallel 4
  ollamasim --models llama3.2,qwen3:8b --max-loaded-models 1 --load 3s \
            --model-load qwen3:8b=8s --prompt-tps 2000   # a GPU that holds one model
  OLLAMA_HOST=127.0.0.1:11534 ollama run llama3.2 "hello"
  OLLAMA_HOST=127.0.0.1:11534 ollama pull gemma3:1b

Flags:
`

// shutdownGrace bounds how long running streams may finish on SIGINT/SIGTERM.
const shutdownGrace = 5 * time.Second

func main() {
	cli.Exit("ollamasim", run(os.Args[1:], os.Stdout))
}

func run(args []string, stdout io.Writer) error {
	cfg := ollamasim.DefaultConfig()
	fs := flag.NewFlagSet("ollamasim", flag.ContinueOnError)
	fs.Usage = cli.Usage(fs.Output(), synopsis, fs.PrintDefaults)
	listen := fs.String("listen", "127.0.0.1:11534", "address to listen on")
	models := fs.String("models", "llama3.2", "comma-separated model names")
	fs.Float64Var(&cfg.TokensPerSecond, "tps", cfg.TokensPerSecond, "tokens per second per stream; negative for no delay")
	fs.DurationVar(&cfg.TimeToFirstToken, "ttft", cfg.TimeToFirstToken, "delay before the first token (prompt evaluation)")
	fs.DurationVar(&cfg.LoadDuration, "load", cfg.LoadDuration, "time loading a model takes: on first use, and again after it was unloaded or evicted")
	modelLoads := fs.String("model-load", "", "load times of single models, overriding --load: comma-separated `name=duration` pairs of --models names")
	fs.IntVar(&cfg.MaxLoadedModels, "max-loaded-models", cfg.MaxLoadedModels, "models loaded at once, like OLLAMA_MAX_LOADED_MODELS; loading one more evicts one; 0 for no limit")
	fs.Float64Var(&cfg.PromptTokensPerSecond, "prompt-tps", cfg.PromptTokensPerSecond, "prompt tokens evaluated per second, added to --ttft for the tokens not in the prompt cache; 0 for --ttft alone")
	fs.IntVar(&cfg.PromptCacheSlots, "prompt-cache", cfg.PromptCacheSlots, "prompts each loaded model keeps for reuse; negative for none")
	fs.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "generations at once across all models (OLLAMA_NUM_PARALLEL is per model)")
	fs.IntVar(&cfg.MaxQueue, "max-queue", cfg.MaxQueue, "requests that may wait for a slot, and for their turn to load a model, before 503, like OLLAMA_MAX_QUEUE")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed for the deterministic text")
	fs.IntVar(&cfg.DefaultTokens, "tokens", cfg.DefaultTokens, "tokens per answer when options.num_predict is unset")
	fs.StringVar(&cfg.Version, "version", cfg.Version, "version reported by /api/version")
	fs.DurationVar(&cfg.PullDuration, "pull", cfg.PullDuration, "time /api/pull takes; negative for no delay")
	log, help, err := cli.ParseLogged(fs, args)
	if help || err != nil {
		return err
	}
	cfg.Models = parseModels(*models)
	if err := setModelLoads(cfg.Models, *modelLoads); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return cli.ListenError(err, "the simulated Ollama", *listen, "listen", "")
	}
	names := make([]string, len(cfg.Models))
	for i, m := range cfg.Models {
		names[i] = m.Name
	}
	srv := &http.Server{
		Handler:           accessLog(log, ollamasim.New(cfg)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "ollamasim listening on http://%s (models: %s)\n", ln.Addr(), strings.Join(names, ", "))
	log.Info("ollamasim started", "addr", ln.Addr().String(), "models", names, "tps", cfg.TokensPerSecond,
		"parallel", cfg.Parallel, "max_loaded_models", cfg.MaxLoadedModels, "load", cfg.LoadDuration,
		"seed", cfg.Seed, "version", cfg.Version)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("ollamasim shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Streams still running (or hung on purpose) after the grace period.
		if cerr := srv.Close(); cerr != nil {
			return fmt.Errorf("close: %w", cerr)
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// parseModels turns "llama3.2, nomic-embed-text" into models with
// ollamasim.NamedModel, the rule /api/pull uses: a name that contains
// "embed" gets the embedding capability instead of completion.
func parseModels(list string) []ollamasim.Model {
	var models []ollamasim.Model
	for name := range strings.SplitSeq(list, ",") {
		if name = strings.TrimSpace(name); name != "" {
			models = append(models, ollamasim.NamedModel(name))
		}
	}
	return models
}

// setModelLoads applies --model-load: "name=duration,..." sets the load
// time of each named model, which must be one of models (compared as
// Ollama compares names: missing parts take their defaults, case ignored).
func setModelLoads(models []ollamasim.Model, spec string) error {
	for pair := range strings.SplitSeq(spec, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		name, value, ok := strings.Cut(pair, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return fmt.Errorf("--model-load: %q is not name=duration", pair)
		}
		d, err := time.ParseDuration(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("--model-load: %s: %q is not a duration such as 5s", name, value)
		}
		i := slices.IndexFunc(models, func(m ollamasim.Model) bool { return sameModel(m.Name, name) })
		if i < 0 {
			return fmt.Errorf("--model-load: %s is not one of --models", name)
		}
		models[i].LoadDuration = d
	}
	return nil
}

// sameModel reports whether a and b name the same model, as Ollama
// resolves a name: missing parts take their defaults and case is ignored.
func sameModel(a, b string) bool {
	na, nb := model.ParseName(a), model.ParseName(b)
	return na.IsValid() && nb.IsValid() && na.EqualFold(nb)
}

// accessLog logs each request at debug level once it has been answered.
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !log.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration", time.Since(start), "canceled", r.Context().Err() != nil)
	})
}

// statusRecorder remembers the status code. Unwrap lets
// http.ResponseController reach the real writer to flush each NDJSON line.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
