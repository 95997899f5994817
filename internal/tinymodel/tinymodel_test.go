package tinymodel_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/ollamamax/ollamamax/internal/tinymodel"
)

// decode reads a model with Ollama's own GGUF decoder.
func decode(t *testing.T, b []byte) *ggml.GGML {
	t.Helper()
	f, err := ggml.Decode(bytes.NewReader(b), -1)
	if err != nil {
		t.Fatalf("ggml.Decode: %v", err)
	}
	return f
}

// rows returns the output.weight rows of the vocabulary, as float32s.
func rows(t *testing.T, b []byte, f *ggml.GGML) [][]float32 {
	t.Helper()
	var out *ggml.Tensor
	for _, ts := range f.Tensors().Items("output.weight") {
		out = ts
	}
	if out == nil {
		t.Fatal("no output.weight tensor")
	}
	e, nv := out.Shape[0], out.Shape[1]
	start := f.Tensors().Offset + out.Offset
	data := b[start : start+out.Size()]
	r := make([][]float32, nv)
	for i := range r {
		r[i] = make([]float32, e)
		for j := range r[i] {
			r[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(data[(uint64(i)*e+uint64(j))*4:]))
		}
	}
	return r
}

func zero(row []float32) bool {
	for _, v := range row {
		if v != 0 {
			return false
		}
	}
	return true
}

// TestModels decodes each model with Ollama's ggml decoder and checks the
// recipe: its metadata, its tensors, and which output rows are zero.
func TestModels(t *testing.T) {
	cases := []struct {
		name      string
		cfg       tinymodel.Config
		wantName  string
		eosZero   bool
		embedding bool
	}{
		{"chat", tinymodel.Config{}, "tiny", false, false},
		{"never stops", tinymodel.Config{Name: "tiny-long", NeverStop: true}, "tiny-long", true, false},
		{"embedding", tinymodel.Config{Name: "tiny-embed", Embedding: true, Seed: 7}, "tiny-embed", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := tinymodel.Bytes(t.TempDir(), c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			f := decode(t, b)
			kv := f.KV()
			if got, want := kv.Architecture(), "llama"; got != want {
				t.Errorf("architecture %q, want %q", got, want)
			}
			if got := kv.String("general.name"); got != c.wantName {
				t.Errorf("general.name %q, want %q", got, c.wantName)
			}
			if got, want := kv.EmbeddingLength(), uint64(tinymodel.EmbeddingLength); got != want {
				t.Errorf("embedding_length %d, want %d", got, want)
			}
			if got, want := kv.ContextLength(), uint64(tinymodel.ContextLength); got != want {
				t.Errorf("context_length %d, want %d", got, want)
			}
			if got, want := kv.String("tokenizer.ggml.model"), "llama"; got != want {
				t.Errorf("tokenizer.ggml.model %q, want %q", got, want)
			}
			_, hasPooling := kv["llama.pooling_type"]
			if hasPooling != c.embedding {
				t.Errorf("llama.pooling_type present: %v, want %v", hasPooling, c.embedding)
			}
			if c.embedding {
				if got, want := kv.Uint("pooling_type"), uint32(1); got != want {
					t.Errorf("pooling_type %d, want %d (mean)", got, want)
				}
			}
			tokens := kv.Strings("tokenizer.ggml.tokens")
			types := kv.Ints("tokenizer.ggml.token_type")
			if got, want := len(tokens), 3+256+1+95+95; got != want {
				t.Fatalf("%d tokens, want %d", got, want)
			}
			if got, want := kv.Uint("vocab_size"), uint32(len(tokens)); got != want {
				t.Errorf("vocab_size %d, want %d", got, want)
			}
			if got, want := len(f.Tensors().Items()), 3+2*9; got != want {
				t.Errorf("%d tensors, want %d", got, want)
			}
			// Every piece but the byte tokens re-tokenizes one to one: a
			// character, or ▁ and one character.
			for i, tok := range tokens {
				if types[i] == 1 && len([]rune(tok)) > 2 {
					t.Errorf("token %d %q: a multi-character piece", i, tok)
				}
			}
			r := rows(t, b, f)
			for i, row := range r {
				wantZero := types[i] == 6 || (i == 2 && c.eosZero)
				if zero(row) != wantZero {
					t.Errorf("output row %d (%q): zero %v, want %v", i, tokens[i], zero(row), wantZero)
				}
			}
		})
	}
}

// TestDeterministic: the same Config writes the same bytes, to a file or
// not; another seed other weights.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, err := tinymodel.Bytes(dir, tinymodel.Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "m.gguf")
	if err := tinymodel.Write(path, tinymodel.Config{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("the same Config wrote different bytes")
	}
	c, err := tinymodel.Bytes(dir, tinymodel.Config{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != len(a) || bytes.Equal(a, c) {
		t.Errorf("seed 2: %d bytes equal to seed 1's: %v; want the same length, other bytes", len(c), bytes.Equal(a, c))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Bytes left files behind: %d entries in its directory, want 1", len(entries))
	}
}
