package dispatcher_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// formBody is a transcription form: a field per value (key=value) and, with
// file set, a file part named file.
func formBody(file *string, fields ...string) (*bytes.Buffer, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, kv := range fields {
		k, v, _ := strings.Cut(kv, "=")
		_ = mw.WriteField(k, v)
	}
	if file != nil {
		fw, _ := mw.CreateFormFile("file", "a.wav")
		_, _ = io.WriteString(fw, *file)
	}
	_ = mw.Close()
	return &b, mw.FormDataContentType()
}

// TestTranscriptionFormsAreCheckedBeforeQueuing: a transcription form gets
// the 400s Ollama's transcription middleware answers (asked of a real
// Ollama 0.32.15), and OllamaMax's own for a model named twice or in the
// URL, before anything is queued; a key limited to one model may not name
// another in the form.
func TestTranscriptionFormsAreCheckedBeforeQueuing(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Versions: []string{"0.32.15"}, Keys: true})
	_, user := f.CreateKey(apikey.Key{Name: "dev", Tenant: "acme", Role: apikey.User})
	_, embedder := f.CreateKey(apikey.Key{Name: "embedder", Tenant: "acme", Role: apikey.User, Models: []string{"nomic-embed-text:latest"}})
	audio, empty := "RIFF", ""
	post := func(target, secret string, body io.Reader, ct string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", f.URL+target, body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	form := func(file *string, fields ...string) func() (io.Reader, string) {
		return func() (io.Reader, string) { b, ct := formBody(file, fields...); return b, ct }
	}
	for _, c := range []struct {
		name, target string
		body         func() (io.Reader, string)
		secret       string
		status       int
		msg          string
	}{
		{"JSON", "", func() (io.Reader, string) { return strings.NewReader(`{"model":"llama3.2"}`), "application/json" }, user, 400,
			"failed to parse multipart form: request Content-Type isn't multipart/form-data"},
		{"no boundary", "", func() (io.Reader, string) { return strings.NewReader("x"), "multipart/form-data" }, user, 400,
			"failed to parse multipart form: no multipart boundary param in Content-Type"},
		{"empty form", "", func() (io.Reader, string) { return strings.NewReader(""), "multipart/form-data; boundary=x" }, user, 400,
			"failed to parse multipart form: multipart: NextPart: EOF"},
		{"no model", "", form(&audio), user, 400, "model is required"},
		{"empty model", "", form(&audio, "model="), user, 400, "model is required"},
		{"no file", "", form(nil, "model=llama3.2"), user, 400, "file is required: http: no such file"},
		{"empty file", "", form(&empty, "model=llama3.2"), user, 400, "audio file is empty"},
		{"two models", "", form(&audio, "model=llama3.2", "model=mistral"), user, 400, "the request names its model more than once"},
		{"a model in the URL", "?model=mistral", form(&audio, "model=llama3.2"), user, 400, "name the model in the form's model field"},
		{"a model the key may not use", "", form(&audio, "model=llama3.2"), embedder, 403, "model 'llama3.2' is not allowed for API key"},
		{"an unknown model", "", form(&audio, "model=nope"), user, 404, "model 'nope' not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, ct := c.body()
			status, got := post("/v1/audio/transcriptions"+c.target, c.secret, body, ct)
			if status != c.status || !strings.Contains(got, c.msg) {
				t.Errorf("got %d %s, want %d %q", status, got, c.status, c.msg)
			}
		})
	}
	si, err := f.Queue.JetStream().Stream(t.Context(), job.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := si.CachedInfo().State.LastSeq; n != 0 {
		t.Errorf("%d jobs were queued for refused forms, want none", n)
	}
}
