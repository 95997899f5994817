package ollamasim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ollama/ollama/types/model"
)

// Model describes one model in the simulator's inventory. Zero fields take
// the defaults documented on each field when the model is added by New or
// SetModels.
type Model struct {
	// Name is the model name as a client would send it, e.g. "llama3.2" or
	// "user/m:tag". A name without a tag gets ":latest".
	Name string
	// Size is the size in bytes; the default is derived from ParameterSize
	// and QuantizationLevel (about 1.9 GB for a 3.2B Q4_K_M model).
	Size int64
	// Digest is 64 hex characters; the default is the sha256 of the display name.
	Digest string
	// Family defaults to "llama".
	Family string
	// ParameterSize defaults to "3.2B".
	ParameterSize string
	// QuantizationLevel defaults to "Q4_K_M".
	QuantizationLevel string
	// Loaded lists the model in /api/ps from the start, with the default
	// keep-alive of 5m. Any model becomes loaded once it serves a request and
	// unloads when its keep-alive runs out, as in Ollama.
	Loaded bool
	// Capabilities defaults to ["completion"]. Known values are "completion",
	// "embedding", "tools", "thinking", "insert", "vision", "audio" (both
	// take images and audio, which other models refuse) and "image" (image
	// generation, which Ollama does not serve over HTTP).
	Capabilities []string
	// EmbeddingLength is the vector length served by /api/embed; the default
	// is 8 for models with the "embedding" capability.
	EmbeddingLength int
	// LoadDuration is how long loading this model takes; zero takes
	// Config.LoadDuration and a negative value means no delay.
	LoadDuration time.Duration
}

// Config configures a Server. Zero values take the defaults of DefaultConfig,
// so Config{Models: ...} is a usable configuration.
type Config struct {
	// Models is the initial inventory, newest first in /api/tags.
	Models []Model
	// TokensPerSecond paces each stream; the default is 50. A negative value
	// means no delay between tokens.
	TokensPerSecond float64
	// TimeToFirstToken is the delay before the first token, reported as
	// prompt evaluation; the default is 20ms. A negative value means none.
	// With PromptTokensPerSecond it is the part that does not depend on the
	// prompt.
	TimeToFirstToken time.Duration
	// PromptTokensPerSecond, if positive, paces prompt evaluation: the delay
	// before the first token grows by one 1/PromptTokensPerSecond for each
	// prompt token not found in the model's prompt cache. The default, 0,
	// leaves the delay at TimeToFirstToken whatever the prompt.
	PromptTokensPerSecond float64
	// PromptCacheSlots is how many prompts each loaded model keeps for reuse,
	// like llama-server's slots together with its host-memory prompt cache
	// (--cache-ram, 8 GiB: some 30 conversations of 2,000 tokens of a 3B
	// model); the default is 32 and a negative value turns reuse off. A
	// generation whose prompt begins like a kept prompt (with the answer that
	// followed it) evaluates only the rest: prompt_eval_duration shrinks,
	// while prompt_eval_count, as in Ollama 0.32, still counts the whole
	// prompt. At least one token is always evaluated; the least recently
	// used prompt goes first; each keeps at most the model's context length
	// of tokens; unloading or evicting the model empties its cache.
	PromptCacheSlots int
	// LoadDuration is how long loading a model takes, for models whose
	// Model.LoadDuration is zero; the default is 0. A request for a model
	// that is not loaded pays it: on first use, and again once the model
	// was unloaded (keep_alive 0, its keep-alive ran out) or evicted. As in
	// Ollama, load_duration reports it together with any wait for another
	// model to make room, and loads happen one at a time.
	LoadDuration time.Duration
	// MaxLoadedModels is how many models may be loaded at once, like
	// OLLAMA_MAX_LOADED_MODELS; the default, 0, is no limit (Ollama's own
	// default is 3 per GPU). A request for a model that is not loaded when
	// the limit is reached evicts a model as Ollama's scheduler does: an idle
	// one, the one with the shortest keep-alive first and, among equals, the
	// least recently used (Ollama breaks the tie by the path of the model's
	// file, which a client cannot see). When every loaded model is busy, it
	// marks the one it would pick to unload once its requests are done and
	// waits for that; requests for that model keep running on it meanwhile.
	// An evicted model loses its prompt cache.
	MaxLoadedModels int
	// Parallel is the maximum number of generations (and embedding calls)
	// running at once across all models; the default is 1. Ollama's
	// OLLAMA_NUM_PARALLEL gives each loaded model that many slots (and
	// embedding models one); the simulator shares them between the models,
	// like a GPU's compute, which is the same thing when MaxLoadedModels is 1.
	Parallel int
	// MaxQueue is the number of requests that may wait for a free slot, like
	// OLLAMA_MAX_QUEUE, and separately the number that may wait for their
	// turn to load a model (what OLLAMA_MAX_QUEUE bounds in Ollama); the
	// default is 512 and a negative value allows no waiting at all. A
	// request beyond it gets 503.
	MaxQueue int
	// DefaultTokens is the number of tokens generated when options.num_predict
	// is unset; the default is 24.
	DefaultTokens int
	// Seed seeds the deterministic text and embeddings.
	Seed int64
	// Version is reported by /api/version; the default is "0.32.15", the
	// Ollama whose API the simulator answers.
	Version string
	// PullDuration is how long /api/pull takes from "pulling manifest" to
	// "success"; the default is 200ms and a negative value means no delay.
	// A name containing "missing" fails the pull, as for a model the
	// registry does not have.
	PullDuration time.Duration
}

// Defaults applied by DefaultConfig and New.
const (
	defaultTokensPerSecond  = 50
	defaultTimeToFirstToken = 20 * time.Millisecond
	defaultParallel         = 1
	defaultMaxQueue         = 512
	defaultTokens           = 24
	defaultVersion          = "0.32.15"
	defaultKeepAlive        = 5 * time.Minute
	defaultContextLength    = 4096
	trainedContextLength    = 131072
	defaultEmbeddingLength  = 8
	defaultPullDuration     = 200 * time.Millisecond
	defaultPromptCacheSlots = 32
)

// DefaultConfig returns a configuration with one model, "llama3.2:latest",
// and every knob at its default.
func DefaultConfig() Config {
	return Config{
		Models:           []Model{{Name: "llama3.2:latest"}},
		TokensPerSecond:  defaultTokensPerSecond,
		TimeToFirstToken: defaultTimeToFirstToken,
		Parallel:         defaultParallel,
		MaxQueue:         defaultMaxQueue,
		DefaultTokens:    defaultTokens,
		Version:          defaultVersion,
		PullDuration:     defaultPullDuration,
		PromptCacheSlots: defaultPromptCacheSlots,
	}
}

// Validate reports the first problem in c, naming the field. New does not
// call it: a model whose name does not parse is listed but never matched.
func (c Config) Validate() error {
	if c.Parallel < 0 {
		return fmt.Errorf("ollamasim: Parallel must not be negative, got %d", c.Parallel)
	}
	if c.DefaultTokens < 0 {
		return fmt.Errorf("ollamasim: DefaultTokens must not be negative, got %d", c.DefaultTokens)
	}
	if c.MaxLoadedModels < 0 {
		return fmt.Errorf("ollamasim: MaxLoadedModels must not be negative, got %d", c.MaxLoadedModels)
	}
	if c.PromptTokensPerSecond < 0 || math.IsNaN(c.PromptTokensPerSecond) || math.IsInf(c.PromptTokensPerSecond, 0) {
		return fmt.Errorf("ollamasim: PromptTokensPerSecond must be a positive number or 0, got %g", c.PromptTokensPerSecond)
	}
	if n := countLoaded(c.Models); c.MaxLoadedModels > 0 && n > c.MaxLoadedModels {
		return fmt.Errorf("ollamasim: %d models are Loaded, more than MaxLoadedModels (%d)", n, c.MaxLoadedModels)
	}
	return validateModels(c.Models)
}

func countLoaded(models []Model) int {
	n := 0
	for _, m := range models {
		if m.Loaded {
			n++
		}
	}
	return n
}

func validateModels(models []Model) error {
	seen := make(map[string]bool, len(models))
	for i, m := range models {
		n := model.ParseName(m.Name)
		if !n.IsValid() {
			return fmt.Errorf("ollamasim: Models[%d].Name %q is not a valid model name", i, m.Name)
		}
		key := strings.ToLower(n.String())
		if seen[key] {
			return fmt.Errorf("ollamasim: Models[%d].Name %q is listed twice", i, m.Name)
		}
		seen[key] = true
		if m.Digest != "" {
			if b, err := hex.DecodeString(m.Digest); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("ollamasim: Models[%d].Digest must be 64 hex characters", i)
			}
		}
		for _, c := range m.Capabilities {
			if !slices.Contains(knownCapabilities, model.Capability(c)) {
				return fmt.Errorf("ollamasim: Models[%d].Capabilities has unknown capability %q", i, c)
			}
		}
		if m.EmbeddingLength < 0 {
			return fmt.Errorf("ollamasim: Models[%d].EmbeddingLength must not be negative", i)
		}
		if m.Size < 0 {
			return fmt.Errorf("ollamasim: Models[%d].Size must not be negative", i)
		}
	}
	return nil
}

var knownCapabilities = []model.Capability{
	model.CapabilityCompletion,
	model.CapabilityTools,
	model.CapabilityInsert,
	model.CapabilityVision,
	model.CapabilityEmbedding,
	model.CapabilityThinking,
	model.CapabilityImage,
	model.CapabilityAudio,
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.TokensPerSecond == 0 {
		c.TokensPerSecond = d.TokensPerSecond
	}
	if c.TimeToFirstToken == 0 {
		c.TimeToFirstToken = d.TimeToFirstToken
	}
	if c.Parallel <= 0 {
		c.Parallel = d.Parallel
	}
	switch {
	case c.MaxQueue == 0:
		c.MaxQueue = d.MaxQueue
	case c.MaxQueue < 0:
		c.MaxQueue = 0
	}
	if c.DefaultTokens <= 0 {
		c.DefaultTokens = d.DefaultTokens
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	if c.PullDuration == 0 {
		c.PullDuration = d.PullDuration
	}
	switch {
	case c.PromptCacheSlots == 0:
		c.PromptCacheSlots = d.PromptCacheSlots
	case c.PromptCacheSlots < 0:
		c.PromptCacheSlots = 0
	}
	c.MaxLoadedModels = max(c.MaxLoadedModels, 0)
	if !(c.PromptTokensPerSecond > 0) || math.IsInf(c.PromptTokensPerSecond, 0) {
		c.PromptTokensPerSecond = 0
	}
	return c
}

// NamedModel returns the model the simulator assumes for a bare name, as
// for a model it pulls: an embedding model when the name contains "embed"
// in any case, a text model otherwise. A tag that is a parameter size, as
// in "qwen3:8b", sets ParameterSize and so the size; the rest are defaults.
func NamedModel(name string) Model {
	m := Model{Name: name}
	if strings.Contains(strings.ToLower(name), "embed") {
		m.Capabilities = []string{string(model.CapabilityEmbedding)}
	}
	if tag := model.ParseName(name).Tag; tag != "" && strings.ContainsAny(tag[len(tag)-1:], "kKmMbBtT") {
		if _, err := parameterCount(tag); err == nil {
			m.ParameterSize = strings.ToUpper(tag)
		}
	}
	return m
}

// withDefaults fills the zero fields of m and puts its name in display form.
func (m Model) withDefaults() Model {
	n := model.ParseName(m.Name)
	if n.IsValid() {
		m.Name = n.DisplayShortest()
	}
	if m.Family == "" {
		m.Family = "llama"
	}
	if m.ParameterSize == "" {
		m.ParameterSize = "3.2B"
	}
	if m.QuantizationLevel == "" {
		m.QuantizationLevel = "Q4_K_M"
	}
	if len(m.Capabilities) == 0 {
		m.Capabilities = []string{string(model.CapabilityCompletion)}
	} else {
		m.Capabilities = slices.Clone(m.Capabilities)
	}
	switch {
	case !slices.Contains(m.Capabilities, string(model.CapabilityEmbedding)):
		m.EmbeddingLength = max(m.EmbeddingLength, 0)
	case m.EmbeddingLength <= 0:
		m.EmbeddingLength = defaultEmbeddingLength
	}
	if m.Digest == "" {
		sum := sha256.Sum256([]byte(m.Name))
		m.Digest = hex.EncodeToString(sum[:])
	}
	if m.Size <= 0 {
		m.Size = derivedSize(m.ParameterSize, m.QuantizationLevel)
	}
	return m
}

// parameterCount parses a size such as "3.2B", "137M" or "70b".
func parameterCount(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty parameter size")
	}
	mult := 1.0
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1e3
	case 'M', 'm':
		mult = 1e6
	case 'B', 'b':
		mult = 1e9
	case 'T', 't':
		mult = 1e12
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("bad parameter size %q", s)
	}
	return int64(f * mult), nil
}

// derivedSize estimates a GGUF file size from the parameter count and the
// bits per weight of the quantisation.
func derivedSize(paramSize, quant string) int64 {
	n, err := parameterCount(paramSize)
	if err != nil {
		return 2_000_000_000
	}
	bits := 5.0
	switch strings.ToUpper(quant) {
	case "Q4_0":
		bits = 4.5
	case "Q4_K_M", "Q4_K_S":
		bits = 4.85
	case "Q5_K_M", "Q5_K_S", "Q5_0":
		bits = 5.7
	case "Q6_K":
		bits = 6.6
	case "Q8_0":
		bits = 8.5
	case "F16", "BF16":
		bits = 16
	case "F32":
		bits = 32
	}
	return int64(math.Round(float64(n) * bits / 8))
}
