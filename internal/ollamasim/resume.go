package ollamasim

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/ollama/ollama/api"
)

// The simulator answers like a model decoding greedily: a request that
// already holds the beginning of the answer it would get gets the rest of
// that answer, chunk for chunk, so a stream moved to another server mid-way
// can be completed byte for byte. Ollama has two ways to ask for that, and
// the simulator honours both:
//
//   - /api/chat whose last message is the partial answer as an assistant
//     message. Ollama renders it without ending the turn, so the model
//     continues it.
//   - /api/generate with raw:true and a prompt that is the rendered
//     template of the original request (from _debug_render_only) followed
//     by the partial answer, or, when the original request was raw too,
//     its prompt followed by the partial answer.
//
// The partial answer must end at a token boundary: it is the text of the
// first k chunks the uninterrupted run streamed. Anything else gets an
// answer of its own, as before.

// The simulator's prompt template. Rendering is a pure function of the
// request, and the generate form can be read back from a raw prompt.
const (
	tagEnd       = "<|end|>\n"
	tagAssistant = "<|assistant|>\n"
	tagSystem    = "<|system|>\n"
	tagUser      = "<|user|>\n"
	tagContext   = "<|context|>\n"
	tagToolCall  = "<|tool_call|>"
	tagFIMPrefix = "<|fim_prefix|>"
	tagFIMSuffix = "<|fim_suffix|>"
	tagFIMMiddle = "<|fim_middle|>"
	thinkOpen    = "<think>"
	thinkClose   = "</think>"
)

func roleTag(role string) string { return "<|" + role + "|>\n" }

// prefills reports whether the last of msgs is an answer for the model to
// continue rather than a finished turn: an assistant message without tool
// calls, after at least one other message.
func prefills(msgs []api.Message) bool {
	if len(msgs) < 2 {
		return false
	}
	last := msgs[len(msgs)-1]
	return last.Role == "assistant" && len(last.ToolCalls) == 0
}

// renderChat renders messages the way a chat template does: the tools, then
// each message as a turn, then an assistant header for the answer. A
// prefilled last assistant message stays open, with no end tag and no new
// header, so the model continues it, as Ollama's templates do.
func renderChat(msgs []api.Message, tools api.Tools) string {
	var b strings.Builder
	if len(tools) > 0 {
		j, _ := json.Marshal(tools) // decoded from JSON, so it encodes
		b.WriteString(roleTag("tools"))
		b.Write(j)
		b.WriteString(tagEnd)
	}
	open := prefills(msgs)
	for i, m := range msgs {
		b.WriteString(roleTag(m.Role))
		if open && i == len(msgs)-1 {
			b.WriteString(answerText(m.Thinking, m.Content))
			return b.String()
		}
		b.WriteString(m.Content)
		for _, tc := range m.ToolCalls {
			j, _ := json.Marshal(tc.Function)
			b.WriteString(tagToolCall)
			b.Write(j)
		}
		b.WriteString(tagEnd)
	}
	b.WriteString(tagAssistant)
	return b.String()
}

// answerText is how (part of) an answer reads in a prompt: the thinking in
// <think> tags, then the content. Thinking with no content yet leaves the
// tag open, since the model is still thinking.
func answerText(thinking, content string) string {
	switch {
	case thinking == "":
		return content
	case content == "":
		return thinkOpen + thinking
	}
	return thinkOpen + thinking + thinkClose + content
}

// splitAnswer is the inverse of answerText.
func splitAnswer(s string) (thinking, content string) {
	rest, ok := strings.CutPrefix(s, thinkOpen)
	if !ok {
		return "", s
	}
	thinking, content, _ = strings.Cut(rest, thinkClose)
	return thinking, content
}

// genSource is what decides a non-raw generate request's text.
type genSource struct {
	system, prompt, suffix string
	context                []int
}

// renderGenerate renders a non-raw generate request as Ollama does: the
// context (the simulator's tokens are not text, so it shows their ids),
// then a fill-in-the-middle prompt when there is a suffix (no system, as
// with Ollama's FIM templates), or else the system and prompt as a chat.
func renderGenerate(src genSource) string {
	var b strings.Builder
	if len(src.context) > 0 {
		b.WriteString(tagContext)
		for i, id := range src.context {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.Itoa(id))
		}
		b.WriteString(tagEnd)
	}
	if src.suffix != "" {
		b.WriteString(tagFIMPrefix + src.prompt + tagFIMSuffix + src.suffix + tagFIMMiddle)
		return b.String()
	}
	var msgs []api.Message
	if src.system != "" {
		msgs = append(msgs, api.Message{Role: "system", Content: src.system})
	}
	b.WriteString(renderChat(append(msgs, api.Message{Role: "user", Content: src.prompt}), nil))
	return b.String()
}

// parseRendered reads a raw prompt as renderGenerate(src) followed by the
// beginning of an answer. Answers never contain "<|", so the last header
// ends the template; a prompt or system text containing the template's
// own tags may be read differently, but only exact renderings are accepted.
func parseRendered(s string) (src genSource, answer string, ok bool) {
	body := s
	if rest, found := strings.CutPrefix(body, tagContext); found {
		ids, rest, found := strings.Cut(rest, tagEnd)
		if !found {
			return genSource{}, "", false
		}
		for f := range strings.FieldsSeq(ids) {
			id, err := strconv.Atoi(f)
			if err != nil {
				return genSource{}, "", false
			}
			src.context = append(src.context, id)
		}
		body = rest
	}
	if rest, found := strings.CutPrefix(body, tagFIMPrefix); found {
		i := strings.LastIndex(rest, tagFIMMiddle)
		if i < 0 {
			return genSource{}, "", false
		}
		src.prompt, src.suffix, _ = strings.Cut(rest[:i], tagFIMSuffix)
		answer = rest[i+len(tagFIMMiddle):]
	} else {
		i := strings.LastIndex(body, tagEnd+tagAssistant)
		if i < 0 {
			return genSource{}, "", false
		}
		head := body[:i]
		answer = body[i+len(tagEnd+tagAssistant):]
		if rest, found := strings.CutPrefix(head, tagSystem); found {
			src.system, head, _ = strings.Cut(rest, tagEnd+tagUser)
		} else {
			head, _ = strings.CutPrefix(head, tagUser)
		}
		src.prompt = head
	}
	// An empty prompt only loads the model, so it has no answer to continue.
	if src.prompt == "" || renderGenerate(src)+answer != s {
		return genSource{}, "", false
	}
	return src, answer, true
}

// answerStarts returns where the beginning of an answer to the text before
// it could start in a raw prompt. Answers are made of vocabulary words (ASCII
// letters and periods, each followed by a space) and <think> tags, and begin
// with a capitalised word or a tag, so only a few places qualify.
func answerStarts(s string) []int {
	i := len(s)
	for i > 0 && isAnswerByte(s[i-1]) {
		i--
	}
	var starts []int
	for j := max(i, 1); j < len(s); j++ {
		if c := s[j]; 'A' <= c && c <= 'Z' || strings.HasPrefix(s[j:], thinkOpen) {
			starts = append(starts, j)
		}
	}
	return starts
}

func isAnswerByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte(". <>/", c) >= 0
}

// resumeAt returns k when thinking and content are exactly the thinking and
// the content streamed in the first k pieces. Content alone also counts
// when all the thinking came before it, for a caller that kept only the
// content. Tool calls are never part of a prefix.
func resumeAt(pieces []piece, thinking, content string) (int, bool) {
	if k, ok := coveredBy(pieces, thinking, content); ok {
		return k, true
	}
	if thinking != "" || content == "" {
		return 0, false
	}
	t := 0
	for t < len(pieces) && pieces[t].thinking {
		t++
	}
	if t == 0 {
		return 0, false
	}
	k, ok := coveredBy(pieces[t:], "", content)
	return t + k, ok
}

func coveredBy(pieces []piece, thinking, content string) (int, bool) {
	for k := 0; ; k++ {
		if thinking == "" && content == "" {
			return k, true
		}
		if k == len(pieces) || pieces[k].toolCall != nil {
			return 0, false
		}
		rest := &content
		if pieces[k].thinking {
			rest = &thinking
		}
		after, ok := strings.CutPrefix(*rest, pieces[k].text)
		if !ok {
			return 0, false
		}
		*rest = after
	}
}

// continuePlan finds the answer that thinking and content begin and plans
// the rest of it. in is the plan input of the request they answer, with
// this request's budget: with num_predict (in.byLength), in.tokens counts
// new tokens only, as in Ollama, so the whole answer is the prefix plus
// in.tokens long; without it the whole answer has the default length.
// Every piece is one word, so a prefix of k pieces has k words.
func continuePlan(in planInput, thinking, content string) (p plan, k int, ok bool) {
	totals := []int{in.tokens}
	if in.byLength {
		c := len(strings.Fields(content))
		totals[0] += len(strings.Fields(thinking)) + c
		if thinking == "" && content != "" && in.think {
			// Only the content was kept: the prefix also holds the
			// thinking, a third of the total n, so n - n/3 = c + budget.
			m := c + in.tokens
			for n := m + 1; n <= m+m/2+1; n++ {
				if n-n/3 == m {
					totals = append(totals, n)
				}
			}
		}
	}
	for _, n := range totals {
		in.tokens = n
		full := makePlan(in)
		if k, ok := resumeAt(full.pieces, thinking, content); ok {
			return plan{pieces: full.pieces[k:], reason: full.reason}, k, true
		}
	}
	return plan{}, 0, false
}
