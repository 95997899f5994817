package ollamasim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// handleGenerate serves POST /api/generate, checking the request in the
// order Ollama's GenerateHandler does so that the first error matches.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	start := time.Now()
	var req api.GenerateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		writeError(w, http.StatusBadRequest, "top_logprobs must be between 0 and 20")
		return
	}
	e := s.lookup(req.Model)
	if e == nil {
		// Ollama answers 404 even for an empty or invalid name.
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
	if req.Raw && (req.Template != "" || req.System != "" || len(req.Context) > 0) {
		writeError(w, http.StatusBadRequest, "raw mode does not support template, system, or context")
		return
	}
	// Think levels are only for gpt-oss (harmony) models, which the
	// simulator does not have.
	if req.Think.IsString() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("think value %q is not supported for this model", req.Think.String()))
		return
	}
	think, ok := thinkFor(w, e, req.Model, req.Think)
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
		loadResponse: func() any {
			return api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "load"}
		},
	}
	if g.loadOnly {
		s.run(w, r, g)
		return
	}
	ctxInts, _ := json.Marshal(req.Context)
	tokens, byLength := s.tokensFor(opts, numCtx)
	g.promptTokens = countTokens(req.System, req.Prompt, req.Suffix) + len(req.Context)
	g.plan = makePlan(planInput{
		seed:        seedOf(itoa(s.cfg.Seed), e.Name, "generate", req.System, req.Prompt, req.Suffix, string(ctxInts), itoa(int64(opts.Seed))),
		tokens:      tokens,
		byLength:    byLength,
		think:       think,
		stop:        opts.Stop,
		logprobs:    req.Logprobs,
		topLogprobs: req.TopLogprobs,
	})
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
			res.Context = append(tokenIDs(req.System, req.Prompt), tokenIDs(g.plan.text())...)
		}
		return res
	}
	s.run(w, r, g)
}

// handleChat serves POST /api/chat, checking the request in the order
// Ollama's ChatHandler does.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	start := time.Now()
	var req api.ChatRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		writeError(w, http.StatusBadRequest, "top_logprobs must be between 0 and 20")
		return
	}
	if !model.ParseName(req.Model).IsValid() {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	e := s.lookup(req.Model)
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
	think, ok := thinkFor(w, e, req.Model, req.Think)
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
	if len(req.Messages) > 0 && req.Think.IsString() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("think value %q is not supported for this model", req.Think.String()))
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
	var tools api.Tools
	if last := req.Messages[len(req.Messages)-1]; len(req.Tools) > 0 && last.Role == "user" {
		tools = req.Tools
	}
	tokens, byLength := s.tokensFor(opts, numCtx)
	g.promptTokens = countTokens(texts...)
	g.plan = makePlan(planInput{
		seed:        seedOf(itoa(s.cfg.Seed), e.Name, "chat", string(material), itoa(int64(opts.Seed))),
		tokens:      tokens,
		byLength:    byLength,
		think:       think,
		stop:        opts.Stop,
		tools:       tools,
		logprobs:    req.Logprobs,
		topLogprobs: req.TopLogprobs,
	})
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
// think unless told not to (v0.12.4+), and asking any other model to think is
// a 400. It writes the error itself.
func thinkFor(w http.ResponseWriter, e *entry, reqModel string, tv *api.ThinkValue) (think, ok bool) {
	if e.has(model.CapabilityThinking) {
		return tv == nil || tv.Bool(), true
	}
	if tv.Bool() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support thinking", reqModel))
		return false, false
	}
	return false, true
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
