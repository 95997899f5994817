package ollamasim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// generation is a validated generate or chat request, ready to run. The
// handlers fill in the wire shapes; run owns timing, slots and failures.
type generation struct {
	entry        *entry
	start        time.Time // request arrival, for total_duration and load_duration
	stream       bool
	loadOnly     bool // empty prompt or messages, or _debug_render_only: load the model and answer loadResponse, without a slot
	keepAlive    time.Duration
	numCtx       int
	format       json.RawMessage
	media        int        // images (or audio) in the request
	loadResponse func() any // the done_reason "load" object, or the _debug_info one

	plan         plan
	promptTokens int
	chunk        func(piece) any  // one streamed line
	final        func(output) any // the done line, or the whole stream:false reply

	// The prompt as the prompt cache sees it (nil: not cached), and how the
	// answer extends it: as a chat's assistant message, or the rest of the
	// prefilled one (continued).
	prompt    *tokenChain
	chat      bool
	continued bool
	res       *residency // the loaded model, once run has it
}

// output is what the final object reports. The text fields are filled only
// for stream:false replies, which carry the concatenation.
type output struct {
	reason    string
	metrics   api.Metrics
	content   string
	thinking  string
	toolCalls []api.ToolCall
	logprobs  []api.Logprob
}

// text is the concatenated answer, without thinking.
func (p plan) text() string {
	var b strings.Builder
	for _, pc := range p.pieces {
		if !pc.thinking {
			b.WriteString(pc.text)
		}
	}
	return b.String()
}

// run loads the model, waits for a slot and streams the plan, honouring the
// injected failure and the client's context throughout.
func (s *Server) run(w http.ResponseWriter, r *http.Request, g *generation) {
	ctx := r.Context()
	f := s.currentFailure()
	if f.Status != 0 {
		s.failEarly(w, g, f.Status, f.message())
		return
	}
	if g.loadOnly && f.Hang {
		s.hang(ctx)
		return
	}
	res, err := s.acquireModel(ctx, g.entry, g.keepAlive, g.numCtx)
	if errors.Is(err, errServerBusy) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if err != nil {
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return
	}
	defer s.releaseModel(g.entry, res, g.keepAlive)
	g.res = res
	loaded := time.Now()
	if g.loadOnly {
		writeJSON(w, http.StatusOK, g.loadResponse())
		return
	}
	if err := checkFormat(g.format); err != nil {
		s.failEarly(w, g, http.StatusInternalServerError, err.Error())
		return
	}
	if g.media > 0 && !g.entry.has(model.CapabilityVision) && !g.entry.has(model.CapabilityAudio) {
		s.failEarly(w, g, http.StatusBadRequest, errNoMultimodal)
		return
	}
	release, err := s.acquireSlot(ctx)
	if errors.Is(err, errServerBusy) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if err != nil {
		s.canceled.Add(1)
		writeError(w, statusCanceled, "request canceled")
		return
	}
	defer release()
	if f.Hang {
		s.hang(ctx)
		return
	}
	s.generate(ctx, w, g, f, loaded)
}

// generate paces the plan: prompt evaluation (TimeToFirstToken, and the
// prompt tokens not in the cache at PromptTokensPerSecond), then one token
// every 1/TokensPerSecond, on a fixed schedule so pacing does not drift.
func (s *Server) generate(ctx context.Context, w http.ResponseWriter, g *generation, f Failure, loaded time.Time) {
	promptStart := time.Now()
	reused, own := s.takeCache(g)
	emitted := 0 // pieces the model produced, for the cache
	defer func() { s.keepCache(g, own, emitted) }()
	if !sleep(ctx, s.promptEvalTime(g.promptTokens-reused)) {
		s.canceled.Add(1)
		return
	}
	s.storeCache(g, own)
	promptEval := time.Since(promptStart)

	var interval time.Duration
	if s.cfg.TokensPerSecond > 0 {
		interval = time.Duration(float64(time.Second) / s.cfg.TokensPerSecond)
	}
	lw := lineWriter{w: w, rc: http.NewResponseController(w)}
	if g.stream {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	var out output
	var content, thinking strings.Builder
	evalStart := time.Now()
	for i := 0; i <= len(g.plan.pieces); i++ {
		if f.AfterTokens > 0 && i == f.AfterTokens {
			if g.stream {
				// Ollama's mid-stream error: status stays 200, one last line, no done line.
				if lw.write(errorResponse{Error: f.message()}) != nil {
					s.canceled.Add(1)
				}
			} else {
				writeError(w, http.StatusInternalServerError, f.message())
			}
			return
		}
		if i == len(g.plan.pieces) {
			break
		}
		if i > 0 && !sleep(ctx, time.Until(evalStart.Add(time.Duration(i)*interval))) {
			s.canceled.Add(1)
			return
		}
		p := g.plan.pieces[i]
		s.tokens.Add(1)
		emitted = i + 1
		if g.stream {
			if lw.write(g.chunk(p)) != nil {
				s.canceled.Add(1)
				return
			}
			continue
		}
		switch {
		case p.toolCall != nil:
			out.toolCalls = append(out.toolCalls, *p.toolCall)
		case p.thinking:
			thinking.WriteString(p.text)
		default:
			content.WriteString(p.text)
		}
		if p.logprob != nil {
			out.logprobs = append(out.logprobs, *p.logprob)
		}
	}
	out.reason = g.plan.reason
	out.content, out.thinking = content.String(), thinking.String()
	out.metrics = api.Metrics{
		TotalDuration:      time.Since(g.start),
		LoadDuration:       loaded.Sub(g.start),
		PromptEvalCount:    g.promptTokens,
		PromptEvalDuration: promptEval,
		EvalCount:          len(g.plan.pieces),
		EvalDuration:       time.Since(evalStart),
	}
	if g.stream {
		if lw.write(g.final(out)) != nil {
			s.canceled.Add(1)
			return
		}
	} else {
		writeJSON(w, http.StatusOK, g.final(out))
	}
	s.completed.Add(1)
}

// promptEvalTime is how long evaluating n prompt tokens takes.
func (s *Server) promptEvalTime(n int) time.Duration {
	d := max(s.cfg.TimeToFirstToken, 0)
	if s.cfg.PromptTokensPerSecond > 0 && n > 0 {
		d += time.Duration(float64(n) / s.cfg.PromptTokensPerSecond * float64(time.Second))
	}
	return d
}

// takeCache looks g's prompt up in its model's prompt cache and counts it
// in Stats; it returns the prompt tokens found there and the entry g keeps
// its tokens in (nil for none).
func (s *Server) takeCache(g *generation) (reused int, own *cachedPrompt) {
	s.promptTokens.Add(int64(g.promptTokens))
	if g.prompt == nil || g.res == nil {
		return 0, nil
	}
	s.mu.Lock()
	s.tick++
	reused, own = g.res.cache.takeLocked(g.prompt.ids, s.cfg.PromptCacheSlots, s.tick)
	s.mu.Unlock()
	// The counted prompt can be shorter than its sequence (a raw prompt
	// that continues an answer counts what it continues); never reuse all.
	reused = max(min(reused, g.promptTokens-1), 0)
	if reused > 0 {
		s.cacheHits.Add(1)
		s.cachedTokens.Add(int64(reused))
	}
	return reused, own
}

// storeCache records that g's prompt is evaluated.
func (s *Server) storeCache(g *generation, own *cachedPrompt) {
	if own == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	own.storeLocked(g.prompt.ids, g.res.cacheLimit(), false, s.tick)
}

// keepCache leaves g's prompt and the first emitted pieces of its answer
// in the cache entry, or, if prompt evaluation did not finish, what the
// entry held then, and frees the entry.
func (s *Server) keepCache(g *generation, own *cachedPrompt, emitted int) {
	if own == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick++
	seq := own.tokens
	if emitted > 0 {
		seq = answerTokens(g.prompt, g.plan.pieces[:emitted], g.chat, g.continued)
	}
	own.storeLocked(seq, g.res.cacheLimit(), true, s.tick)
}

// errNoMultimodal is llama-server's answer to images or audio for a model
// that takes neither, which Ollama 0.30+ passes on whole, JSON and all.
const errNoMultimodal = `{"error":{"code":400,"message":"Multimodal data provided, but model does not support multimodal requests.","type":"invalid_request_error"}}`

// failEarly answers a runner-side error before the first byte. Ollama's
// streamResponse sets plain "application/json" for these on streaming
// requests; everything else goes through c.JSON with the charset.
func (s *Server) failEarly(w http.ResponseWriter, g *generation, status int, msg string) {
	contentType := "application/json; charset=utf-8"
	if g.stream && !g.loadOnly {
		contentType = "application/json"
	}
	writeJSONType(w, status, contentType, errorResponse{Error: msg})
}

// hang blocks until the client goes away, like a stuck runner.
func (s *Server) hang(ctx context.Context) {
	<-ctx.Done()
	s.canceled.Add(1)
}

// lineWriter writes NDJSON: one JSON object and "\n" per line, flushed at
// once so the client sees each token as it is made.
type lineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (lw lineWriter) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := lw.w.Write(append(b, '\n')); err != nil {
		return err
	}
	if err := lw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
