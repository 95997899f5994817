package ollamasim_test

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"

	"github.com/ollama/ollama/openai"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// form builds a multipart body of fields, with the audio as its "file"
// part when audio is not nil, and returns it with its content type.
func form(t *testing.T, fields map[string]string, audio []byte) (body, contentType string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if audio != nil {
		f, err := w.CreateFormFile("file", "a.wav")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(audio); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String(), w.FormDataContentType()
}

// TestTranscriptionErrors holds /v1/audio/transcriptions to what real
// Ollama 0.32.15 answered with curl -F, e.g. for its tiny text model
//
//	400 application/json
//	{"error":{"message":"{\"error\":{\"code\":400,\"message\":\"Multimodal data provided, but model does not support multimodal requests.\",\"type\":\"invalid_request_error\"}}","type":"invalid_request_error","param":null,"code":null}}
func TestTranscriptionErrors(t *testing.T) {
	base, _ := start(t, ollamasim.New(mediaConfig()))
	wav := []byte("RIFFxxxxWAVEfmt ")
	const multimodal = `{"error":{"code":400,"message":"Multimodal data provided, but model does not support multimodal requests.","type":"invalid_request_error"}}`
	tests := []struct {
		name            string
		fields          map[string]string
		audio           []byte
		raw, rawType    string // a body that is not built by form
		wantStatus      int
		wantContentType string
		wantBody        string
	}{
		{name: "json body", raw: `{"model":"whisper-ish"}`, rawType: "application/json", wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("failed to parse multipart form: request Content-Type isn't multipart/form-data")},
		{name: "no body", wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("failed to parse multipart form: request Content-Type isn't multipart/form-data")},
		{name: "broken multipart", raw: "garbage", rawType: "multipart/form-data; boundary=xyz", wantStatus: 400, wantContentType: jsonUTF8,
			wantBody: requestError("failed to parse multipart form: multipart: NextPart: EOF")},
		{name: "no model", audio: wav, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("model is required")},
		{name: "no file", fields: map[string]string{"model": "whisper-ish"}, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("file is required: http: no such file")},
		{name: "empty file", fields: map[string]string{"model": "whisper-ish"}, audio: []byte{}, wantStatus: 400, wantContentType: jsonUTF8, wantBody: requestError("audio file is empty")},
		{name: "unknown model", fields: map[string]string{"model": "nope"}, audio: wav, wantStatus: 404, wantContentType: "application/json", wantBody: compatError(404, "model 'nope' not found")},
		{name: "text model", fields: map[string]string{"model": "llama3.2"}, audio: wav, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, multimodal)},
		{name: "text model, text format", fields: map[string]string{"model": "llama3.2", "response_format": "text"}, audio: wav, wantStatus: 400, wantContentType: "application/json", wantBody: compatError(400, multimodal)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ct := tt.raw, tt.rawType
			if tt.raw == "" && (tt.fields != nil || tt.audio != nil) {
				body, ct = form(t, tt.fields, tt.audio)
			}
			var header []string
			if ct != "" {
				header = []string{"Content-Type", ct}
			}
			r := do(t, base, "POST", "/v1/audio/transcriptions", body, header...)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType || r.body != tt.wantBody {
				t.Errorf("got %d %q %q\nwant %d %q %q", r.status, r.contentType, r.body, tt.wantStatus, tt.wantContentType, tt.wantBody)
			}
		})
	}
}

// TestTranscription checks the answer of a model that takes audio: the
// native chat's whole text, trimmed, as JSON or plain text. There was no
// audio model to ask; the shape, and the content type left by the chat
// stream's first flush, are read from Ollama's TranscriptionWriter.
func TestTranscription(t *testing.T) {
	_, c := start(t, ollamasim.New(mediaConfig()))
	base, _ := start(t, ollamasim.New(mediaConfig()))
	audio := []byte("RIFFxxxxWAVEfmt data")
	chat, err := openai.FromTranscriptionRequest(openai.TranscriptionRequest{Model: "whisper-ish", AudioData: audio, Language: "en"})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(nativeChat(t, c, *chat).Message.Content)
	if want == "" {
		t.Fatal("the native chat said nothing; this test needs text")
	}
	for _, tt := range []struct{ format, wantBody string }{
		{"", `{"text":"` + want + `"}` + "\n"},
		{"json", `{"text":"` + want + `"}` + "\n"},
		{"text", want},
	} {
		t.Run("format "+tt.format, func(t *testing.T) {
			fields := map[string]string{"model": "whisper-ish", "language": "en"}
			if tt.format != "" {
				fields["response_format"] = tt.format
			}
			body, ct := form(t, fields, audio)
			r := do(t, base, "POST", "/v1/audio/transcriptions", body, "Content-Type", ct)
			if r.status != 200 || r.contentType != "application/x-ndjson" || r.body != tt.wantBody {
				t.Errorf("got %d %q %q\nwant 200 application/x-ndjson %q", r.status, r.contentType, r.body, tt.wantBody)
			}
		})
	}
}
