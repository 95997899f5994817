package job

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// form writes a multipart form of the given parts: a part is a value, or,
// with a file name, a file.
type part struct{ name, file, value string }

func form(t testing.TB, parts ...part) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		var err error
		if p.file != "" {
			var fw interface{ Write([]byte) (int, error) }
			if fw, err = w.CreateFormFile(p.name, p.file); err == nil {
				_, err = fw.Write([]byte(p.value))
			}
		} else {
			err = w.WriteField(p.name, p.value)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

func TestReadForm(t *testing.T) {
	audio := part{"file", "a.wav", "RIFF...."}
	tests := []struct {
		name  string
		parts []part
		want  Form
	}{
		{"model and file", []part{{"model", "", "whisper"}, audio}, Form{Model: "whisper", Models: 1, File: true}},
		{"file first", []part{audio, {"model", "", "whisper"}}, Form{Model: "whisper", Models: 1, File: true}},
		{"first model of two", []part{{"model", "", "a"}, {"model", "", "b"}, audio}, Form{Model: "a", Models: 2, File: true}},
		{"a file named model is no model", []part{{"model", "m.txt", "b"}, audio}, Form{File: true}},
		{"a value named file is no file", []part{{"model", "", "a"}, {"file", "", "x"}}, Form{Model: "a", Models: 1}},
		{"empty file", []part{{"model", "", "a"}, {"file", "e.wav", ""}}, Form{Model: "a", Models: 1, File: true, FileEmpty: true}},
		{"the first file counts", []part{{"model", "", "a"}, {"file", "e.wav", ""}, audio}, Form{Model: "a", Models: 1, File: true, FileEmpty: true}},
		{"other fields", []part{{"language", "", "en"}, {"Model", "", "other case"}, {"model", "", "a"}, audio}, Form{Model: "a", Models: 1, File: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ct := form(t, tt.parts...)
			got, err := ReadForm(body, ct)
			if err != nil || got != tt.want {
				t.Fatalf("ReadForm = %+v, %v; want %+v", got, err, tt.want)
			}
			// What Go's own form parsing, which Ollama's handler uses, says.
			r := httptest.NewRequest("POST", "/v1/audio/transcriptions", bytes.NewReader(body))
			r.Header.Set("Content-Type", ct)
			if err := r.ParseMultipartForm(32 << 20); err != nil {
				t.Fatal(err)
			}
			if m := r.FormValue("model"); m != got.Model {
				t.Errorf("Ollama's handler reads the model %q, ReadForm %q", m, got.Model)
			}
			_, _, ferr := r.FormFile("file")
			if (ferr == nil) != got.File {
				t.Errorf("Ollama's handler finds the file: %v; ReadForm: %v", ferr == nil, got.File)
			}
		})
	}
}

func TestReadFormRefuses(t *testing.T) {
	body, ct := form(t, part{"model", "", "a"})
	many := make([]part, maxFormParts+1)
	for i := range many {
		many[i] = part{"x", "", "y"}
	}
	manyBody, manyCT := form(t, many...)
	longBody, longCT := form(t, part{"model", "", strings.Repeat("m", maxFormModel+1)})
	tests := []struct {
		name, ct string
		body     []byte
		want     error
		text     string
	}{
		{"no content type", "", body, ErrNotMultipart, http.ErrNotMultipart.Error()},
		{"JSON", "application/json", []byte(`{"model":"a"}`), ErrNotMultipart, http.ErrNotMultipart.Error()},
		{"no boundary", "multipart/form-data", body, ErrMissingBoundary, http.ErrMissingBoundary.Error()},
		{"too many parts", manyCT, manyBody, ErrFormTooLarge, multipart.ErrMessageTooLarge.Error()},
		{"a model name too long", longCT, longBody, ErrFormTooLarge, ""},
		{"empty body", ct, nil, nil, "multipart: NextPart: EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadForm(tt.body, tt.ct)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) || tt.text != "" && !strings.HasPrefix(err.Error(), tt.text) {
				t.Fatalf("ReadForm: %v, want %v (%q)", err, tt.want, tt.text)
			}
		})
	}
}

// FuzzReadForm: any body and Content-Type, and the model ReadForm finds is
// the one Go's form parsing (Ollama's) finds when both read the form.
func FuzzReadForm(f *testing.F) {
	body, ct := form(f, part{"model", "", "whisper"}, part{"file", "a.wav", "RIFF"})
	f.Add(body, ct)
	body, ct = form(f, part{"model", "", "a"}, part{"model", "", "b"})
	f.Add(body, ct)
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nwhis=\r\nper\r\n--x--\r\n"), "multipart/form-data; boundary=x")
	f.Add([]byte("garbage"), "multipart/form-data; boundary=x")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		got, err := ReadForm(body, ct)
		if err != nil {
			return
		}
		if got.Models == 0 && got.Model != "" || got.FileEmpty && !got.File || len(got.Model) > maxFormModel {
			t.Fatalf("inconsistent form %+v", got)
		}
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", ct)
		if r.ParseMultipartForm(32<<20) == nil && r.FormValue("model") != got.Model {
			t.Fatalf("Go's form parsing reads the model %q, ReadForm %q", r.FormValue("model"), got.Model)
		}
	})
}
