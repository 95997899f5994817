package dispatcher

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name, route, body string
		status            int // 0: accepted
		model             string
	}{
		{"generate", "/api/generate", `{"model":"m","prompt":"hi"}`, 0, "m"},
		{"chat", "/api/chat", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 0, "m"},
		{"no model", "/api/chat", `{"messages":[]}`, 400, ""},
		{"malformed", "/api/generate", `{"model":`, 400, ""},
		{"wrong type", "/api/embed", `{"model":1}`, 400, ""},
		{"openai no messages", "/v1/chat/completions", `{"model":"m","messages":[]}`, 400, ""},
		{"openai bad encoding", "/v1/embeddings", `{"model":"m","input":"x","encoding_format":"hex"}`, 400, ""},
		{"openai embeddings", "/v1/embeddings", `{"model":"m","input":["x"]}`, 0, "m"},
		{"not queued", "/api/pull", `{"model":"m"}`, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			model, ok := validate(rec, tt.route, []byte(tt.body))
			if tt.status == 0 {
				if !ok || model != tt.model {
					t.Fatalf("validate = %q, %v (%d %s); want %q accepted", model, ok, rec.Code, rec.Body, tt.model)
				}
				return
			}
			if ok || rec.Code != tt.status {
				t.Fatalf("validate = %q, %v, status %d; want refused with %d", model, ok, rec.Code, tt.status)
			}
		})
	}
}

// FuzzValidate feeds arbitrary bodies to every queued route: the dispatcher
// either accepts one with a model name, or answers it with a 4xx in the
// route's own error shape. It never panics.
func FuzzValidate(f *testing.F) {
	var queued []string
	for _, r := range job.Routes() {
		if r.Queued && r.Path != "/api/show" {
			queued = append(queued, r.Path)
		}
	}
	f.Add(uint8(0), []byte(`{"model":"m","prompt":"hi","options":{"num_predict":3}}`))
	f.Add(uint8(1), []byte(`{"model":"m","messages":[{"role":"user","content":"hi","images":["aGk="]}],"tools":[{}]}`))
	f.Add(uint8(4), []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:,"}}]}]}`))
	f.Add(uint8(5), []byte(`{"model":"m","prompt":"x","suffix":"y","stop":["a"]}`))
	f.Add(uint8(6), []byte(`{"model":"m","input":[[1,2]]}`))
	for i, r := range queued {
		switch r {
		case "/v1/messages":
			f.Add(uint8(i), []byte(`{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"aGk="}},{"type":"tool_result","content":[{"type":"text","text":"x"}]}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"thinking":{"type":"enabled"}}`))
		case "/v1/responses":
			f.Add(uint8(i), []byte(`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"ok"},{"type":"reasoning","encrypted_content":"r"}],"reasoning":{"effort":"high"},"tools":[{"type":"namespace","name":"n","tools":[{"type":"function","name":"g"}]}]}`))
		}
	}
	f.Fuzz(func(t *testing.T, i uint8, body []byte) {
		route := queued[int(i)%len(queued)]
		rec := httptest.NewRecorder()
		model, ok := validate(rec, route, body)
		if ok {
			if model == "" {
				t.Fatalf("%s accepted %q without a model", route, body)
			}
			return
		}
		if rec.Code < 400 || rec.Code > 499 {
			t.Fatalf("%s refused %q with %d", route, body, rec.Code)
		}
		var shape map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &shape); err != nil || shape["error"] == nil {
			t.Fatalf("%s refused %q with a body not in the error shape: %s", route, body, rec.Body)
		}
		if rt, _ := job.LookupRoute(route); rt.API == job.OpenAI && rec.Header().Get("Content-Type") == "" {
			t.Fatalf("no content type: %v", http.Header(rec.Header()))
		}
	})
}
