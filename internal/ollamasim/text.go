package ollamasim

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"unicode"

	"github.com/ollama/ollama/api"
)

// The simulator's tokenizer is one token per whitespace-separated word, for
// prompts and output alike, so counts are consistent with the text.

// vocabulary is the fixed word list the text is drawn from. Changing it
// changes every simulator's output.
var vocabulary = []string{
	"the", "model", "river", "light", "queue", "signal", "stream", "quiet",
	"token", "orbit", "garden", "answer", "window", "paper", "silver", "engine",
	"morning", "bridge", "number", "simple", "yellow", "forest", "message", "north",
	"careful", "worker", "patient", "system", "ocean", "little", "bright", "memory",
	"a", "of", "and", "to", "in", "is", "with", "for",
	"every", "under", "before", "after", "between", "around", "slowly", "always",
	"stone", "cloud", "metal", "glass", "thread", "market", "winter", "summer",
	"reason", "pattern", "balance", "harbor", "lantern", "circle", "measure", "promise",
}

// rng is splitmix64: tiny, fast and fully specified here, so the output does
// not depend on the Go version's math/rand algorithms.
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n); the modulo bias is irrelevant here.
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// seedOf hashes the parts, length-prefixed so that boundaries matter.
func seedOf(parts ...string) uint64 {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// piece is one emitted chunk of a generation.
type piece struct {
	text     string
	thinking bool
	toolCall *api.ToolCall
	logprob  *api.Logprob
}

// plan is a whole generation, computed before the first byte is written so
// that it is a pure function of the request.
type plan struct {
	pieces []piece
	reason string // "stop" or "length"
}

// planInput is everything that decides the text.
type planInput struct {
	seed        uint64 // from seedOf(Config.Seed, model, prompt material, options.seed)
	tokens      int    // tokens to generate
	byLength    bool   // tokens came from options.num_predict, so the end is "length"
	think       bool   // split off the first third as thinking
	stop        []string
	tools       api.Tools // non-empty: answer with a call to the first tool
	logprobs    bool
	topLogprobs int
}

// makePlan draws the words, splits off thinking, applies stop sequences and
// turns the answer into a tool call when tools were offered.
func makePlan(in planInput) plan {
	r := rng{state: in.seed}
	n := in.tokens
	thinkN := 0
	if in.think {
		thinkN = n / 3
	}
	words := make([]string, n)
	startSentence := true
	sentenceLeft := 0
	for i := range words {
		if i == thinkN {
			startSentence = true
		}
		if startSentence {
			sentenceLeft = 6 + r.intn(9)
		}
		w := vocabulary[r.intn(len(vocabulary))]
		if startSentence {
			w = capitalise(w)
		}
		sentenceLeft--
		startSentence = sentenceLeft == 0 || i == thinkN-1
		if startSentence {
			w += "."
		}
		words[i] = w + " "
	}

	p := plan{reason: "stop"}
	if in.byLength {
		p.reason = "length"
	}
	for _, w := range words[:thinkN] {
		p.pieces = append(p.pieces, piece{text: w, thinking: true})
	}
	switch content := words[thinkN:]; {
	case len(in.tools) > 0 && len(content) > 0:
		// The model answers with a call instead of text, ending on its own.
		call := toolCall(&r, in.tools[0])
		p.pieces = append(p.pieces, piece{toolCall: &call})
		p.reason = "stop"
	default:
		content, stopped := applyStop(content, in.stop)
		if stopped {
			p.reason = "stop"
		}
		for _, w := range content {
			p.pieces = append(p.pieces, piece{text: w})
		}
	}
	if in.logprobs {
		lr := rng{state: in.seed ^ 0x6c6f6770726f6273} // "logprobs": a separate stream keeps the text unchanged
		for i := range p.pieces {
			if p.pieces[i].toolCall == nil {
				lp := logprob(&lr, p.pieces[i].text, in.topLogprobs)
				p.pieces[i].logprob = &lp
			}
		}
	}
	return p
}

func capitalise(w string) string {
	rs := []rune(w)
	rs[0] = unicode.ToUpper(rs[0])
	return string(rs)
}

// applyStop cuts the words at the first occurrence of any stop sequence, as
// Ollama's runner does, and reports whether it cut.
func applyStop(words []string, stops []string) ([]string, bool) {
	text := strings.Join(words, "")
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return words, false
	}
	var out []string
	off := 0
	for _, w := range words {
		if off+len(w) <= cut {
			out = append(out, w)
			off += len(w)
			continue
		}
		if rest := w[:cut-off]; rest != "" {
			out = append(out, rest)
		}
		break
	}
	return out, true
}

// toolCall builds a call to t with a made-up value for each required
// parameter, typed after the parameter's declared type.
func toolCall(r *rng, t api.Tool) api.ToolCall {
	const idChars = "abcdefghijklmnopqrstuvwxyz0123456789"
	id := make([]byte, 8)
	for i := range id {
		id[i] = idChars[r.intn(len(idChars))]
	}
	args := api.NewToolCallFunctionArguments()
	for _, name := range t.Function.Parameters.Required {
		typ := "string"
		if props := t.Function.Parameters.Properties; props != nil {
			if p, ok := props.Get(name); ok && len(p.Type) > 0 {
				typ = p.Type[0]
			}
		}
		switch typ {
		case "integer", "number":
			args.Set(name, 1+r.intn(100))
		case "boolean":
			args.Set(name, r.intn(2) == 1)
		default:
			args.Set(name, vocabulary[r.intn(len(vocabulary))])
		}
	}
	return api.ToolCall{
		ID: "call_" + string(id),
		Function: api.ToolCallFunction{
			Name:      t.Function.Name,
			Arguments: args,
		},
	}
}

// logprob makes a plausible log probability for tok and, when top > 0, the
// top alternatives with the chosen token first.
func logprob(r *rng, tok string, top int) api.Logprob {
	lp := api.Logprob{TokenLogprob: api.TokenLogprob{
		Token:   tok,
		Logprob: -r.float() * 2,
		Bytes:   byteInts(tok),
	}}
	if top > 0 {
		lp.TopLogprobs = append(lp.TopLogprobs, lp.TokenLogprob)
		prev := lp.Logprob
		for range top - 1 {
			prev -= 0.1 + r.float()*2
			alt := vocabulary[r.intn(len(vocabulary))] + " "
			lp.TopLogprobs = append(lp.TopLogprobs, api.TokenLogprob{Token: alt, Logprob: prev, Bytes: byteInts(alt)})
		}
	}
	return lp
}

func byteInts(s string) []int {
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}

// countTokens counts prompt tokens with the simulator's tokenizer; a prompt
// always costs at least one token, like a BOS token.
func countTokens(texts ...string) int {
	n := 0
	for _, t := range texts {
		n += len(strings.Fields(t))
	}
	return max(n, 1)
}

// tokenIDs maps words to stable ids in Llama's vocabulary range, for the
// generate response's context.
func tokenIDs(texts ...string) []int {
	var ids []int
	for _, t := range texts {
		for w := range strings.FieldsSeq(t) {
			ids = append(ids, wordID(w))
		}
	}
	return ids
}

// wordID is the id of one of the simulator's tokens, a word.
func wordID(w string) int {
	h := fnv.New32a()
	h.Write([]byte(w))
	return 1 + int(h.Sum32()%128000)
}

// embedding returns the raw (not normalised) deterministic vector for text.
func embedding(seed uint64, length int) []float64 {
	r := rng{state: seed}
	v := make([]float64, length)
	for i := range v {
		v[i] = r.float()*2 - 1
	}
	return v
}

// normalise scales v to unit L2 length, as Ollama's EmbedHandler does.
func normalise(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	norm := float32(1 / max(math.Sqrt(sum), 1e-12))
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = x * norm
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
