package ollamasim

import (
	"encoding/json"
	"hash/fnv"
	"strings"

	"github.com/ollama/ollama/api"
)

// The prompt cache. llama-server, which runs Ollama 0.32's models, keeps
// the tokens each slot last evaluated (the prompt and the answer, all but
// the answer's last token) and, with --cache-ram, more prompts in host
// memory; a request is given the kept prompt that shares the longest
// beginning with its own, and evaluates only the rest, at least one token.
// A slot whose prompt the new one mostly keeps is continued in place; one
// it would mostly throw away is saved first. Ollama reports
// prompt_eval_count as the cached plus the evaluated tokens, so the count
// does not change, only prompt_eval_duration does.
//
// The simulator keeps up to Config.PromptCacheSlots prompts per loaded
// model, as token sequences in which each token's id hashes every token
// and every piece of template before it (roles, tools, images, tool
// calls), so that two sequences agree exactly as far as the prompts they
// stand for do. A sequence has one id per token the simulator counts in
// prompt_eval_count (the words of the message contents, of system, prompt
// and suffix, and the ids of a generate request's context).

// promptCache is one loaded model's kept prompts.
type promptCache struct {
	entries []*cachedPrompt
}

// cachedPrompt is one kept token sequence.
type cachedPrompt struct {
	tokens   []uint64
	busy     bool   // a running generation writes to it
	lastUsed uint64 // Server.tick
}

// takeLocked finds the longest beginning of seq the cache holds and returns
// how many tokens of seq need no evaluation, and the entry the generation
// keeps its tokens in (nil when every entry is busy and there is no room):
// the matched entry if seq keeps at least half of it, otherwise a new one,
// dropping the least recently used entry to make room. slots bounds the
// number of entries; with none, nothing is reused or kept.
func (c *promptCache) takeLocked(seq []uint64, slots int, tick uint64) (reused int, own *cachedPrompt) {
	if slots <= 0 || len(seq) == 0 {
		return 0, nil
	}
	var best *cachedPrompt
	bestLen := 0
	for _, e := range c.entries {
		if n := commonPrefix(e.tokens, seq); !e.busy && n > bestLen {
			best, bestLen = e, n
		}
	}
	reused = min(bestLen, len(seq)-1)
	if best != nil && 2*bestLen >= len(best.tokens) {
		own = best
	} else {
		own = c.newEntryLocked(slots)
	}
	if own != nil {
		if own == best {
			own.tokens = own.tokens[:reused]
		} else {
			own.tokens = append(own.tokens[:0], seq[:reused]...)
		}
		own.busy = true
		own.lastUsed = tick
	}
	return reused, own
}

// newEntryLocked adds an empty entry, first dropping the least recently
// used idle one if slots are taken; nil if all of them are busy.
func (c *promptCache) newEntryLocked(slots int) *cachedPrompt {
	if len(c.entries) < slots {
		e := &cachedPrompt{}
		c.entries = append(c.entries, e)
		return e
	}
	var lru *cachedPrompt
	for _, e := range c.entries {
		if !e.busy && (lru == nil || e.lastUsed < lru.lastUsed) {
			lru = e
		}
	}
	return lru // reused: takeLocked overwrites its tokens
}

// storeLocked puts the tokens evaluated so far into own, at most limit of
// them (the context length), and with done marks it free for others.
func (own *cachedPrompt) storeLocked(seq []uint64, limit int, done bool, tick uint64) {
	if own == nil {
		return
	}
	own.tokens = append(own.tokens[:0], seq[:min(len(seq), max(limit, 0))]...)
	if done {
		own.busy = false
		own.lastUsed = tick
	}
}

func commonPrefix(a, b []uint64) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// tokenChain builds a token sequence: each token's id depends on the
// token and on everything absorbed or tokenised before it.
type tokenChain struct {
	h   uint64
	ids []uint64
}

func newTokenChain(kind string) *tokenChain {
	c := &tokenChain{h: 0x9e3779b97f4a7c15}
	c.absorb(kind)
	return c
}

// absorb adds template material that the simulator does not count as
// prompt tokens but that a real prompt would spell out.
func (c *tokenChain) absorb(s string) {
	h := fnv.New64a()
	h.Write([]byte(s))
	c.h = mix64(c.h ^ h.Sum64() ^ 0xa5a5a5a5a5a5a5a5)
}

func (c *tokenChain) absorbBytes(b []byte) {
	h := fnv.New64a()
	h.Write(b)
	c.h = mix64(c.h ^ h.Sum64() ^ 0x5a5a5a5a5a5a5a5a)
}

// token adds one counted token with the given id.
func (c *tokenChain) token(id uint64) {
	c.h = mix64(c.h ^ id)
	c.ids = append(c.ids, c.h)
}

// words adds the words of text, the simulator's tokens.
func (c *tokenChain) words(text string) {
	for w := range strings.FieldsSeq(text) {
		c.token(uint64(wordID(w)))
	}
}

// mix64 is SplitMix64's finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// chatTokens is the token sequence of a chat prompt. thinkingLast counts
// the last message's thinking, as a continued answer's prompt does.
func chatTokens(msgs []api.Message, tools api.Tools, thinkingLast bool) *tokenChain {
	c := newTokenChain("chat")
	if len(tools) > 0 {
		j, _ := json.Marshal(tools) // decoded from JSON, so it encodes
		c.absorb(string(j))
	}
	for i, m := range msgs {
		c.absorb("role:" + m.Role)
		for _, img := range m.Images {
			c.absorbBytes(img)
		}
		if thinkingLast && i == len(msgs)-1 {
			c.words(m.Thinking)
		}
		c.words(m.Content)
		for _, tc := range m.ToolCalls {
			j, _ := json.Marshal(tc.Function)
			c.absorb(string(j))
		}
		if i < len(msgs)-1 || !prefills(msgs) {
			c.absorb("end")
		}
	}
	return c
}

// generateTokens is the token sequence of a generate prompt: the context
// (the ids a previous answer returned, which are the simulator's word ids),
// then the images and the words of system, prompt and suffix. A raw prompt
// is its words alone.
func generateTokens(src genSource, images []api.ImageData, raw bool) *tokenChain {
	if raw {
		c := newTokenChain("raw")
		c.words(src.prompt)
		return c
	}
	c := newTokenChain("generate")
	for _, id := range src.context {
		c.token(uint64(id))
	}
	for _, img := range images {
		c.absorbBytes(img)
	}
	c.words(src.system)
	c.words(src.prompt)
	c.words(src.suffix)
	return c
}

// answerTokens returns prompt followed by the tokens of the answer so far,
// as the model's cache holds them: all but the last token, which is
// sampled but not yet evaluated. chat adds the answer as the assistant's
// message (or as the rest of a continued one), thinking included; other
// answers add their content, as the context a generate returns does.
func answerTokens(prompt *tokenChain, pieces []piece, chat, continued bool) []uint64 {
	c := &tokenChain{h: prompt.h, ids: prompt.ids[:len(prompt.ids):len(prompt.ids)]}
	var thinking, content strings.Builder
	var calls []api.ToolCall
	for _, p := range pieces {
		switch {
		case p.toolCall != nil:
			calls = append(calls, *p.toolCall)
		case p.thinking:
			thinking.WriteString(p.text)
		default:
			content.WriteString(p.text)
		}
	}
	if chat {
		if !continued {
			c.absorb("role:assistant")
		}
		c.words(thinking.String())
	}
	c.words(content.String())
	for _, tc := range calls {
		j, _ := json.Marshal(tc.Function)
		c.absorb(string(j))
	}
	if len(c.ids) > len(prompt.ids) {
		return c.ids[:len(c.ids)-1]
	}
	return c.ids
}
