package ollamasim_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ollama/ollama/anthropic"
	"github.com/ollama/ollama/openai"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// FuzzRequestBodies checks that no body makes the simulator panic or answer
// with anything but JSON, NDJSON or Ollama's {"error": ...}.
func FuzzRequestBodies(f *testing.F) {
	paths := []string{"/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show"}
	seeds := []struct {
		path uint8
		body string
	}{
		{0, `{"model":"llama3.2","prompt":"hi"}`},
		{0, `{"model":"llama3.2","prompt":"hi","stream":false,"options":{"stop":["a"],"seed":3}}`},
		{0, `{"model":"qwen3:8b","prompt":"hi","think":"high","format":{"type":"object"}}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":3}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}}}]}`},
		{2, `{"model":"nomic-embed-text","input":["a","b"],"dimensions":2}`},
		{3, `{"model":"nomic-embed-text","prompt":"a"}`},
		{4, `{"name":"llama3.2"}`},
		{0, `{"model":"llama3.2","keep_alive":"-1"}`},
		{1, `{"model":"llama3.2","options":{"num_ctx":-5,"num_predict":-2}}`},
		{0, `{"model":"qwen3:8b","raw":true,"prompt":"<|context|>\n1 2<|end|>\n<|system|>\ns<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n<think>A </think>B ","options":{"num_predict":4}}`},
		{0, `{"model":"llama3.2","raw":true,"prompt":"<|fim_prefix|>f(<|fim_suffix|>)<|fim_middle|>A "}`},
		{0, `{"model":"llama3.2","prompt":"hi","system":"s","_debug_render_only":true}`},
		{1, `{"model":"qwen3:8b","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"A ","thinking":"B "}],"options":{"num_predict":2}}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":""}],"_debug_render_only":true}`},
		{0, `{"model":"llama3.2","prompt":"go on","context":[1,2,-3,99999999999]}`},
		{1, `{"model":"llama3.2","messages":[{"role":"user","content":"a b"},{"role":"assistant","content":"c","tool_calls":[{"function":{"name":"f","arguments":{}}}]},{"role":"tool","content":"d"}],"keep_alive":0}`},
		{0, ``},
		{1, `[`},
	}
	for _, s := range seeds {
		f.Add(s.path, s.body)
	}
	cfg := fastConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	cfg.MaxLoadedModels = 2 // of three models: loads evict
	cfg.PromptTokensPerSecond = 1e12
	cfg.PromptCacheSlots = 3
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, path uint8, body string) {
		req := httptest.NewRequest("POST", paths[int(path)%len(paths)], strings.NewReader(body))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("status %d with body %q, want {\"error\": ...}", rec.Code, rec.Body)
			}
			return
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(rec.Body.String(), "\n"), "\n") {
			if !json.Valid([]byte(line)) {
				t.Fatalf("status %d with invalid JSON line %q", rec.Code, line)
			}
		}
	})
}

// FuzzOpenAIBodies checks that no body makes an OpenAI route panic or
// answer with anything but an OpenAI error, a JSON object or "data: "
// events.
func FuzzOpenAIBodies(f *testing.F) {
	paths := []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/pull", "/api/copy", "/v1/responses"}
	seeds := []struct {
		path uint8
		body string
	}{
		{0, `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}`},
		{0, `{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":"data:;base64,AAAA"}]}]}`},
		{0, `{"model":"qwen3:8b","reasoning_effort":"none","response_format":{"type":"json_object"},"stop":"x","messages":[{"role":"tool","tool_call_id":"c","content":"x"}]}`},
		{1, `{"model":"llama3.2","prompt":"hi","stream":true,"logprobs":2,"stop":["a"]}`},
		{2, `{"model":"nomic-embed-text","input":["a",""],"encoding_format":"base64","dimensions":2}`},
		{3, `{"model":"gemma3","stream":false}`},
		{3, `{"name":"missing"}`},
		{4, `{"source":"llama3.2","destination":"x"}`},
		{0, ``},
		{1, `[`},
		{0, `{"model":"gpt-oss:cloud","messages":[{"role":"user","content":"hi"}]}`},
		{5, `{"model":"llama3.2","input":"hi","stream":true,"max_output_tokens":2}`},
		{5, `{"model":"qwen3:8b","instructions":"s","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]},{"type":"reasoning","encrypted_content":"A "},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"B "}]}],"reasoning":{"effort":"xhigh"}}`},
		{5, `{"model":"llama3.2","tools":[{"type":"namespace","name":"ns","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]},{"type":"web_search"}],"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"x"}]}],"text":{"format":{"type":"json_schema","schema":{"type":"object"}}}}`},
	}
	for _, s := range seeds {
		f.Add(s.path, s.body)
	}
	cfg := fastConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	cfg.PullDuration = -1
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, path uint8, body string) {
		p := paths[int(path)%len(paths)]
		req := httptest.NewRequest("POST", p, strings.NewReader(body))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		out := rec.Body.String()
		switch {
		case strings.HasPrefix(p, "/v1/") && rec.Code == http.StatusBadGateway && strings.HasPrefix(out, `{"error":{"message":`):
			// A cloud model's proxy failing on a /v1 route answers in the
			// route's own error shape.
		case strings.HasPrefix(p, "/api/") || rec.Code == http.StatusBadGateway:
			// Native routes, and cloud models, which Ollama answers before
			// the compatibility layer.
			if rec.Code >= 400 {
				var e struct {
					Error string `json:"error"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
					t.Fatalf("status %d with body %q, want {\"error\": ...}", rec.Code, out)
				}
			}
		case rec.Code >= 400:
			var e openai.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("status %d with body %q, want an OpenAI error", rec.Code, out)
			}
		case rec.Header().Get("Content-Type") == "text/event-stream":
			for ev := range strings.SplitSeq(strings.TrimSuffix(out, "\n\n"), "\n\n") {
				if name, rest, ok := strings.Cut(ev, "\n"); ok && p == "/v1/responses" && strings.HasPrefix(name, "event: ") {
					ev = rest
				}
				payload, ok := strings.CutPrefix(ev, "data: ")
				if !ok || (payload != "[DONE]" && !json.Valid([]byte(payload))) {
					t.Fatalf("bad SSE event %q", ev)
				}
			}
		case !json.Valid(rec.Body.Bytes()):
			t.Fatalf("status %d with invalid JSON %q", rec.Code, out)
		}
	})
}

// FuzzMessagesBodies checks that no body makes /v1/messages panic or answer
// with anything but an Anthropic error, a message or named events.
func FuzzMessagesBodies(f *testing.F) {
	for _, body := range []string{
		`{"model":"llama3.2","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"qwen3:8b","max_tokens":4,"stream":true,"system":[{"type":"text","text":"s"}],"thinking":{"type":"enabled","budget_tokens":9},"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":[{"type":"thinking","thinking":"A "},{"type":"text","text":"B "}]}]}`,
		`{"model":"llama3.2","max_tokens":9,"stream":true,"tools":[{"name":"f","input_schema":{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}},{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"llama3.2","max_tokens":3,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"base64","data":"AAAA"}}]}]}]}`,
		`{"model":"llama3.2","max_tokens":3,"stop_sequences":["e"],"temperature":0.5,"top_k":3,"output_config":{"effort":"xhigh"},"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m:cloud","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`,
		``,
		`[`,
	} {
		f.Add(body)
	}
	cfg := fastConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/messages", strings.NewReader(body))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		out := rec.Body.String()
		switch {
		case rec.Code == http.StatusBadGateway:
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("status 502 with body %q, want {\"error\": ...}", out)
			}
		case rec.Code >= 400:
			var e anthropic.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" || e.RequestID == "" {
				t.Fatalf("status %d with body %q, want an Anthropic error", rec.Code, out)
			}
		case rec.Header().Get("Content-Type") == "text/event-stream":
			for ev := range strings.SplitSeq(strings.TrimSuffix(out, "\n\n"), "\n\n") {
				name, data, ok := strings.Cut(ev, "\n")
				if !ok || !strings.HasPrefix(name, "event: ") || !strings.HasPrefix(data, "data: ") || !json.Valid([]byte(strings.TrimPrefix(data, "data: "))) {
					t.Fatalf("bad SSE event %q", ev)
				}
			}
		case !json.Valid(rec.Body.Bytes()):
			t.Fatalf("status %d with invalid JSON %q", rec.Code, out)
		}
	})
}

// FuzzTranscriptionForms checks that no multipart body makes
// /v1/audio/transcriptions panic or answer with anything but an OpenAI
// error or a transcription.
func FuzzTranscriptionForms(f *testing.F) {
	for _, body := range []string{
		"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-ish\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b--\r\n",
		"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nllama3.2\r\n--b\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\ntext\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nx\r\n--b--\r\n",
		"--b\r\n\r\n--b--",
		"",
	} {
		f.Add(body)
	}
	cfg := mediaConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/audio/transcriptions", strings.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var e openai.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("status %d with body %q, want an OpenAI error", rec.Code, rec.Body)
			}
		}
	})
}

// FuzzZstdBodies checks that no zstd-encoded body makes a /v1 route panic
// or answer with anything but an error object or an answer.
func FuzzZstdBodies(f *testing.F) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, body := range []string{
		`{"model":"llama3.2","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"llama3.2","input":"hi","max_output_tokens":2}`,
		`{"model":"m:cloud","input":"hi"}`,
	} {
		f.Add(uint8(0), enc.EncodeAll([]byte(body), nil))
	}
	f.Add(uint8(1), []byte("notzstd"))
	paths := []string{"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"}
	cfg := fastConfig()
	cfg.TokensPerSecond = -1
	cfg.TimeToFirstToken = -1
	cfg.DefaultTokens = 3
	sim := ollamasim.New(cfg)
	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		req := httptest.NewRequest("POST", paths[int(path)%len(paths)], bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "zstd")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var e struct {
				Error json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || len(e.Error) == 0 {
				t.Fatalf("status %d with body %q, want an error object", rec.Code, rec.Body)
			}
		}
	})
}
