package ollamasim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// handleGenerate serves POST /api/generate, checking the request in the
// order Ollama's GenerateHandler does so that the first error matches.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req api.GenerateRequest
	if !s.decodeCounted(w, r, &req, &req.DebugRenderOnly) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		writeError(w, http.StatusBadRequest, "top_logprobs must be between 0 and 20")
		return
	}
	ref, err := parseModelRef(req.Model)
	if err != nil {
		// Ollama answers 404 for an empty name.
		writeModelRefError(w, err, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if ref.cloud {
		cloudUnreachable(w, r, r.URL.Path)
		return
	}
	e := s.lookup(ref.base)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if req.Prompt == "" && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
		s.unloadModel(e)
		writeJSON(w, http.StatusOK, api.GenerateResponse{
			Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "unload",
		})
		return
	}
	if e.has(model.CapabilityImage) {
		writeError(w, http.StatusBadRequest, "image generation models are not currently supported")
		return
	}
	if req.Raw && (req.Template != "" || req.System != "" || len(req.Context) > 0) {
		writeError(w, http.StatusBadRequest, "raw mode does not support template, system, or context")
		return
	}
	think, ok := thinkFor(w, r, e, req.Model, req.Think)
	if !ok {
		return
	}
	if !e.has(model.CapabilityCompletion) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support generate", req.Model))
		return
	}
	if req.Suffix != "" && !e.has(model.CapabilityInsert) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s does not support %s", e.fullName(), model.CapabilityInsert))
		return
	}
	opts, numCtx, err := parseOptions(req.Options)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}

	g := &generation{
		entry:     e,
		start:     start,
		stream:    req.Stream == nil || *req.Stream,
		loadOnly:  req.Prompt == "",
		keepAlive: keepAlive(req.KeepAlive),
		numCtx:    numCtx,
		format:    req.Format,
		media:     len(req.Images),
		loadResponse: func() any {
			return api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "load"}
		},
	}
	if g.loadOnly {
		s.run(w, r, g)
		return
	}
	src := genSource{system: req.System, prompt: req.Prompt, suffix: req.Suffix, context: req.Context}
	if req.DebugRenderOnly {
		rendered := req.Prompt
		if !req.Raw {
			rendered = renderGenerate(src)
		}
		s.renderOnly(w, r, g, func() any {
			return api.GenerateResponse{
				Model:     req.Model,
				CreatedAt: time.Now().UTC(),
				DebugInfo: &api.DebugInfo{RenderedTemplate: rendered, ImageCount: len(req.Images)},
			}
		})
		return
	}
	seed := func(src genSource) uint64 {
		ctxInts, _ := json.Marshal(src.context)
		return seedOf(itoa(s.cfg.Seed), e.Name, "generate", src.system, src.prompt, src.suffix, string(ctxInts), itoa(int64(opts.Seed)))
	}
	tokens, byLength := s.tokensFor(opts, numCtx)
	in := planInput{
		seed:        seed(src),
		tokens:      tokens,
		byLength:    byLength,
		think:       think,
		stop:        opts.Stop,
		logprobs:    req.Logprobs,
		topLogprobs: req.TopLogprobs,
	}
	g.promptTokens = countTokens(req.System, req.Prompt, req.Suffix) + len(req.Context)
	resumed := false
	if req.Raw {
		resumed = resumeRaw(g, req.Prompt, in, seed)
	}
	if !resumed {
		g.plan = makePlan(in)
	}
	g.prompt = generateTokens(src, req.Images, req.Raw)
	g.chunk = func(p piece) any {
		res := api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC()}
		if p.thinking {
			res.Thinking = p.text
		} else {
			res.Response = p.text
		}
		if p.logprob != nil {
			res.Logprobs = []api.Logprob{*p.logprob}
		}
		return res
	}
	g.final = func(o output) any {
		res := api.GenerateResponse{
			Model:      req.Model,
			CreatedAt:  time.Now().UTC(),
			Response:   o.content,
			Thinking:   o.thinking,
			Done:       true,
			DoneReason: o.reason,
			Metrics:    o.metrics,
			Logprobs:   o.logprobs,
		}
		if !req.Raw {
			// As in Ollama, the context given, then this prompt and answer.
			res.Context = append(append(slices.Clone(req.Context), tokenIDs(req.System, req.Prompt, req.Suffix)...), tokenIDs(g.plan.text())...)
		}
		return res
	}
	s.run(w, r, g)
}

// handleChat serves POST /api/chat, checking the request in the order
// Ollama's ChatHandler does.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req api.ChatRequest
	if !s.decodeCounted(w, r, &req, &req.DebugRenderOnly) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		writeError(w, http.StatusBadRequest, "top_logprobs must be between 0 and 20")
		return
	}
	ref, err := parseModelRef(req.Model)
	if err != nil {
		writeModelRefError(w, err, http.StatusBadRequest, "model is required")
		return
	}
	if ref.cloud {
		cloudUnreachable(w, r, r.URL.Path)
		return
	}
	e := s.lookup(ref.base)
	if e == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if len(req.Messages) == 0 && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
		s.unloadModel(e)
		writeJSON(w, http.StatusOK, api.ChatResponse{
			Model: req.Model, CreatedAt: time.Now().UTC(), Message: api.Message{Role: "assistant"},
			Done: true, DoneReason: "unload",
		})
		return
	}
	think, ok := thinkFor(w, r, e, req.Model, req.Think)
	if !ok {
		return
	}
	if !e.has(model.CapabilityCompletion) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support chat", req.Model))
		return
	}
	if len(req.Tools) > 0 && !e.has(model.CapabilityTools) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s does not support %s", e.fullName(), model.CapabilityTools))
		return
	}
	opts, numCtx, err := parseOptions(req.Options)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	images := 0
	for _, m := range req.Messages {
		images += len(m.Images)
	}
	if len(req.Messages) > 0 && req.DebugRenderOnly {
		rendered := renderChat(req.Messages, req.Tools)
		g := &generation{entry: e, start: start, keepAlive: keepAlive(req.KeepAlive), numCtx: numCtx}
		s.renderOnly(w, r, g, func() any {
			return api.ChatResponse{
				Model:     req.Model,
				CreatedAt: time.Now().UTC(),
				DebugInfo: &api.DebugInfo{RenderedTemplate: rendered, ImageCount: images},
			}
		})
		return
	}

	g := &generation{
		entry:     e,
		start:     start,
		stream:    req.Stream == nil || *req.Stream,
		loadOnly:  len(req.Messages) == 0,
		keepAlive: keepAlive(req.KeepAlive),
		numCtx:    numCtx,
		format:    req.Format,
		media:     images,
		loadResponse: func() any {
			return api.ChatResponse{
				Model: req.Model, CreatedAt: time.Now().UTC(), Message: api.Message{Role: "assistant"},
				Done: true, DoneReason: "load",
			}
		},
	}
	if g.loadOnly {
		s.run(w, r, g)
		return
	}
	material, err := json.Marshal(req.Messages)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var texts []string
	for _, m := range req.Messages {
		texts = append(texts, m.Content)
	}
	// The model calls a tool only in answer to the user.
	toolsFor := func(msgs []api.Message) api.Tools {
		if msgs[len(msgs)-1].Role == "user" {
			return req.Tools
		}
		return nil
	}
	tokens, byLength := s.tokensFor(opts, numCtx)
	in := planInput{
		seed:        seedOf(itoa(s.cfg.Seed), e.Name, "chat", string(material), itoa(int64(opts.Seed))),
		tokens:      tokens,
		byLength:    byLength,
		think:       think,
		stop:        opts.Stop,
		tools:       toolsFor(req.Messages),
		logprobs:    req.Logprobs,
		topLogprobs: req.TopLogprobs,
	}
	g.promptTokens = countTokens(texts...)
	resumed := false
	if prefills(req.Messages) {
		// Continue the answer the conversation before the last message got,
		// if the last message is its beginning.
		before := req.Messages[:len(req.Messages)-1]
		last := req.Messages[len(req.Messages)-1]
		beforeJSON, _ := json.Marshal(before) // part of what encoded above
		orig := in
		orig.seed = seedOf(itoa(s.cfg.Seed), e.Name, "chat", string(beforeJSON), itoa(int64(opts.Seed)))
		orig.tools = toolsFor(before)
		if p, _, ok := continuePlan(orig, last.Thinking, last.Content); ok {
			g.plan, resumed = p, true
			g.promptTokens = countTokens(append(texts, last.Thinking)...)
		}
	}
	if !resumed {
		g.plan = makePlan(in)
	}
	g.prompt = chatTokens(req.Messages, req.Tools, resumed)
	g.chat, g.continued = true, prefills(req.Messages)
	g.chunk = func(p piece) any {
		res := api.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: api.Message{Role: "assistant"}}
		switch {
		case p.toolCall != nil:
			res.Message.ToolCalls = []api.ToolCall{*p.toolCall}
		case p.thinking:
			res.Message.Thinking = p.text
		default:
			res.Message.Content = p.text
		}
		if p.logprob != nil {
			res.Logprobs = []api.Logprob{*p.logprob}
		}
		return res
	}
	g.final = func(o output) any {
		return api.ChatResponse{
			Model:     req.Model,
			CreatedAt: time.Now().UTC(),
			Message: api.Message{
				Role: "assistant", Content: o.content, Thinking: o.thinking, ToolCalls: o.toolCalls,
			},
			Done:       true,
			DoneReason: o.reason,
			Metrics:    o.metrics,
			Logprobs:   o.logprobs,
		}
	}
	s.run(w, r, g)
}

// thinkFor decides whether the model thinks, as Ollama does: thinking models
// think unless told not to (v0.12.4+), at any level ("low" to "max": the
// simulator's text does not depend on it), and asking any other model to
// think is a 400, except through /v1/messages (relaxThinking), where Ollama
// drops the request for Claude Code's sake. It writes the error itself.
func thinkFor(w http.ResponseWriter, r *http.Request, e *entry, reqModel string, tv *api.ThinkValue) (think, ok bool) {
	if e.has(model.CapabilityThinking) {
		return tv == nil || tv.Bool(), true
	}
	if tv.Bool() && r.Context().Value(relaxThinking{}) == nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support thinking", reqModel))
		return false, false
	}
	return false, true
}

// relaxThinking is the context key of the Anthropic middleware's
// "relax_thinking" flag.
type relaxThinking struct{}

// decodeCounted decodes the body of a generate or chat request and counts
// it in Stats.Requests, unless it is a _debug_render_only request (read
// through debug once decoded), which only renders the prompt. The count
// comes before any answer, so a client that got one sees it.
func (s *Server) decodeCounted(w http.ResponseWriter, r *http.Request, v any, debug *bool) bool {
	msg := readBody(r, v)
	if msg != "" || !*debug {
		s.requests.Add(1)
	}
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// renderOnly answers _debug_render_only like Ollama: once the model is
// loaded, with the rendered prompt and without taking a slot.
func (s *Server) renderOnly(w http.ResponseWriter, r *http.Request, g *generation, reply func() any) {
	g.loadOnly = true
	g.loadResponse = reply
	s.run(w, r, g)
}

// resumeRaw reads a raw prompt as a request followed by the beginning of
// its answer and, if it is, plans the rest of that answer into g. The
// request is either rendered (non-raw) or raw itself. in is the raw
// request's plan input; seed gives the seed of a request.
func resumeRaw(g *generation, prompt string, in planInput, seed func(genSource) uint64) bool {
	try := func(src genSource, answer string) bool {
		if !in.think && strings.HasPrefix(answer, thinkOpen) {
			return false
		}
		thinking, content := splitAnswer(answer)
		in.seed = seed(src)
		p, k, ok := continuePlan(in, thinking, content)
		if ok {
			g.plan = p
			g.promptTokens = countTokens(src.system, src.prompt, src.suffix) + len(src.context) + k
		}
		return ok
	}
	if src, answer, ok := parseRendered(prompt); ok {
		if try(src, answer) {
			return true
		}
		// "context":[] renders like no context but seeds differently; with
		// nothing of the answer yet, the two cannot be told apart.
		if src.context == nil && try(genSource{system: src.system, prompt: src.prompt, suffix: src.suffix, context: []int{}}, answer) {
			return true
		}
	}
	for _, i := range answerStarts(prompt) {
		if try(genSource{prompt: prompt[:i]}, prompt[i:]) {
			return true
		}
	}
	return false
}

// tokensFor returns how many tokens to generate and whether num_predict set
// it, in which case the generation ends with done_reason "length". Like
// Ollama, it caps generation at ten times the context length.
func (s *Server) tokensFor(opts api.Options, numCtx int) (int, bool) {
	limit := 10 * min(cmp.Or(numCtx, defaultContextLength), trainedContextLength)
	if opts.NumPredict > 0 {
		return min(opts.NumPredict, limit), true
	}
	return min(s.cfg.DefaultTokens, limit), false
}

func keepAlive(d *api.Duration) time.Duration {
	if d == nil {
		return defaultKeepAlive
	}
	return d.Duration
}

// optionKeys are the JSON names of api.Options fields. Unknown keys are
// dropped before Options.FromMap, which would log them; Ollama ignores them.
var optionKeys = func() map[string]bool {
	keys := make(map[string]bool)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[api.Options]()) {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" {
			keys[name] = true
		}
	}
	return keys
}()

// parseOptions merges the request's options over Ollama's defaults with
// Ollama's own type rules; a wrong type is an error Ollama answers with 500.
// numCtx is options.num_ctx, or 0 when the request did not set a positive one.
func parseOptions(m map[string]any) (opts api.Options, numCtx int, err error) {
	known := make(map[string]any, len(m))
	for k, v := range m {
		if optionKeys[k] {
			known[k] = v
		}
	}
	opts = api.DefaultOptions()
	if err := opts.FromMap(known); err != nil {
		return api.Options{}, 0, err
	}
	if _, ok := known["num_ctx"]; ok && opts.NumCtx > 0 {
		numCtx = opts.NumCtx
	}
	return opts, numCtx, nil
}

// checkFormat rejects what Ollama's runner rejects before generating.
func checkFormat(f json.RawMessage) error {
	switch string(f) {
	case "", "null", `""`, `"json"`:
		return nil
	}
	if f[0] != '{' {
		return fmt.Errorf("invalid format: %q; expected \"json\" or a valid JSON Schema object", []byte(f))
	}
	return nil
}
