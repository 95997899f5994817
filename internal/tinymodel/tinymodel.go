// Package tinymodel writes tiny GGUF models, a few hundred kilobytes of
// random weights that a real Ollama loads and runs end to end at thousands
// of tokens per second on one CPU core. Their text is gibberish by design:
// they exist so that tests can run against the real thing and compare
// shapes (status, fields, frame sequences), not words.
//
// Ollama's own fs/ggml.WriteGGUF does the writing. The recipe, each part of
// which was measured against Ollama 0.32.15 (../shared/ollama/README.md):
//
//   - a llama architecture, embedding 64, 2 blocks, 4 heads, feed-forward
//     128, f32 tensors and a SentencePiece vocabulary of <unk>, <s>, </s>,
//     the 256 byte tokens, ▁, and each printable ASCII character alone and
//     after ▁;
//   - byte tokens are present (the tokenizer needs them for input it has no
//     piece for, such as the template's newline) but get zero rows in
//     output.weight while the other rows are scaled up: they are practically
//     never sampled, so the output is always valid UTF-8;
//   - no multi-character word pieces: every piece re-tokenizes one to one,
//     so a continued answer's prompt is no longer than the answer it holds;
//   - with Config.NeverStop, </s> gets a zero row too and answers run to
//     num_predict;
//   - with Config.Embedding, llama.pooling_type 1 (mean), which Ollama
//     needs before it serves embeddings for a model.
//
// Production code must not import this package.
package tinymodel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/ollama/ollama/fs/ggml"
)

// Template is the chat template the models are meant to be registered with
// (TEMPLATE in a Modelfile, "template" in /api/create): one line per message
// and an open assistant turn. It mentions neither tools nor thinking, so
// Ollama refuses both for such a model.
const Template = "{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "

// The shape of every model: small enough to run at thousands of tokens per
// second on one core, large enough for llama.cpp's llama architecture.
const (
	EmbeddingLength = 64
	blocks          = 2
	heads           = 4
	feedForward     = 128
	ContextLength   = 4096
)

// Token types of a SentencePiece vocabulary (llama.cpp's llama_token_type).
const (
	typeNormal  = 1
	typeUnknown = 2
	typeControl = 3
	typeByte    = 6
)

// Config chooses the model. The zero Config is the chat model, seed 0.
type Config struct {
	// Name is general.name; the default is "tiny".
	Name string
	// Seed seeds the weights: the same Config writes the same bytes.
	Seed uint64
	// NeverStop gives the end-of-sequence token a zero output row, so the
	// model (practically) never ends an answer before num_predict.
	// Otherwise it stops after a few hundred tokens on average.
	NeverStop bool
	// Embedding declares mean pooling (llama.pooling_type 1): Ollama then
	// lists the model with the "embedding" capability, serves /api/embed
	// and refuses generation.
	Embedding bool
}

// vocabulary returns the tokens, their types and scores.
func vocabulary() (tokens []string, types []int32, scores []float32) {
	add := func(tok string, typ int32, score float32) {
		tokens, types, scores = append(tokens, tok), append(types, typ), append(scores, score)
	}
	add("<unk>", typeUnknown, 0)
	add("<s>", typeControl, 0)
	add("</s>", typeControl, 0)
	for i := range 256 {
		add(fmt.Sprintf("<0x%02X>", i), typeByte, 0)
	}
	add("\u2581", typeNormal, -1)
	for c := rune(0x20); c <= 0x7e; c++ {
		add(string(c), typeNormal, -1)
	}
	for c := rune(0x20); c <= 0x7e; c++ {
		add("\u2581"+string(c), typeNormal, -0.5)
	}
	return tokens, types, scores
}

// eos is the index of </s> in the vocabulary.
const eos = 2

// KV returns the model's metadata, as WriteGGUF writes it.
func (c Config) KV() ggml.KV {
	name := c.Name
	if name == "" {
		name = "tiny"
	}
	tokens, types, scores := vocabulary()
	kv := ggml.KV{
		"general.architecture":                   "llama",
		"general.name":                           name,
		"general.file_type":                      uint32(0), // all f32
		"llama.context_length":                   uint32(ContextLength),
		"llama.embedding_length":                 uint32(EmbeddingLength),
		"llama.block_count":                      uint32(blocks),
		"llama.feed_forward_length":              uint32(feedForward),
		"llama.attention.head_count":             uint32(heads),
		"llama.attention.head_count_kv":          uint32(heads),
		"llama.rope.dimension_count":             uint32(EmbeddingLength / heads),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.vocab_size":                       uint32(len(tokens)),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.tokens":                  tokens,
		"tokenizer.ggml.token_type":              types,
		"tokenizer.ggml.scores":                  scores,
		"tokenizer.ggml.unknown_token_id":        uint32(0),
		"tokenizer.ggml.bos_token_id":            uint32(1),
		"tokenizer.ggml.eos_token_id":            uint32(eos),
		"tokenizer.ggml.add_bos_token":           true,
	}
	if c.Embedding {
		kv["llama.pooling_type"] = uint32(1) // mean
	}
	return kv
}

// tensors returns the model's weights, drawn from c.Seed.
func (c Config) tensors() []*ggml.Tensor {
	r := rand.New(rand.NewPCG(c.Seed, 0x7469_6e79)) // "tiny"
	_, types, _ := vocabulary()
	nv := uint64(len(types))
	const e, ff = EmbeddingLength, feedForward
	random := func(n uint64, scale float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = (r.Float32()*2 - 1) * scale
		}
		return v
	}
	ones := func(n uint64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	var ts []*ggml.Tensor
	add := func(name string, shape []uint64, v []float32) {
		var b bytes.Buffer
		_ = binary.Write(&b, binary.LittleEndian, v) // A bytes.Buffer does not fail.
		ts = append(ts, &ggml.Tensor{Name: name, Kind: 0, Shape: shape, WriterTo: bytes.NewReader(b.Bytes())})
	}
	add("token_embd.weight", []uint64{e, nv}, random(e*nv, 1))
	// Zero rows for what must never be sampled, the other rows scaled up so
	// that their logits spread far above a zero row's 0.
	out := random(e*nv, 1)
	for i := range nv {
		zero := types[i] == typeByte || (c.NeverStop && i == eos)
		for j := range uint64(e) {
			if zero {
				out[i*e+j] = 0
			} else {
				out[i*e+j] *= 5
			}
		}
	}
	add("output.weight", []uint64{e, nv}, out)
	add("output_norm.weight", []uint64{e}, ones(e))
	for b := range blocks {
		p := fmt.Sprintf("blk.%d.", b)
		add(p+"attn_norm.weight", []uint64{e}, ones(e))
		add(p+"ffn_norm.weight", []uint64{e}, ones(e))
		for _, n := range []string{"attn_q", "attn_k", "attn_v", "attn_output"} {
			add(p+n+".weight", []uint64{e, e}, random(e*e, 0.2))
		}
		add(p+"ffn_gate.weight", []uint64{e, ff}, random(e*ff, 0.2))
		add(p+"ffn_up.weight", []uint64{e, ff}, random(e*ff, 0.2))
		add(p+"ffn_down.weight", []uint64{ff, e}, random(e*ff, 0.2))
	}
	return ts
}

// Write writes the model to a new file at path (an existing file is
// truncated). The same Config always writes the same bytes.
func Write(path string, c Config) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write tiny model: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write tiny model: %w", cerr)
		}
	}()
	if err := ggml.WriteGGUF(f, c.KV(), c.tensors()); err != nil {
		return fmt.Errorf("write tiny model: %w", err)
	}
	return nil
}

// Bytes returns the model's file. WriteGGUF writes only to files, so it
// goes through one in dir (os.TempDir() when dir is ""), removed after.
func Bytes(dir string, c Config) ([]byte, error) {
	f, err := os.CreateTemp(dir, "tiny-*.gguf")
	if err != nil {
		return nil, fmt.Errorf("write tiny model: %w", err)
	}
	path := f.Name()
	_ = f.Close() // Write opens it again; nothing was written through f.
	defer os.Remove(path)
	if err := Write(path, c); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("write tiny model: %w", err)
	}
	return b, nil
}
