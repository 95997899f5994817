package job

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
)

// A job's body is JSON but for /v1/audio/transcriptions, whose body is a
// multipart/form-data form (Ollama 0.20+): such a job states its body's
// Content-Type in HeaderBodyType, and its model is the form's "model" field.

// Errors of ReadForm, in the words of Go's net/http, which Ollama's
// handler answers with (400 "failed to parse multipart form: ...").
var (
	ErrNotMultipart    = errors.New("request Content-Type isn't multipart/form-data")
	ErrMissingBoundary = errors.New("no multipart boundary param in Content-Type")
	ErrFormTooLarge    = errors.New("multipart: message too large")
)

// Limits of ReadForm: Go's own on the parts of a form, and a bound on the
// one value it keeps, the model's name (far longer than any valid one).
const (
	maxFormParts = 1000
	maxFormModel = 4 << 10
)

// Form is what a transcription form says about the job: its model, as
// Ollama's handler reads it (the first "model" value), how many values
// named "model" it has, and whether its first file named "file" is there
// and not empty.
type Form struct {
	Model     string
	Models    int
	File      bool
	FileEmpty bool
}

// ReadForm reads a multipart/form-data body with the given Content-Type as
// Go's Request.ParseMultipartForm does for Ollama (parts without a file
// name are values), in constant memory but for the model's name. It
// returns ErrNotMultipart or ErrMissingBoundary for a Content-Type that is
// not a form, ErrFormTooLarge beyond 1000 parts or a model name of more
// than 4 KiB, and the multipart reader's error for a malformed body.
func ReadForm(body []byte, contentType string) (Form, error) {
	var f Form
	if contentType == "" {
		return f, ErrNotMultipart
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return f, ErrNotMultipart
	}
	boundary, ok := params["boundary"]
	if !ok {
		return f, ErrMissingBoundary
	}
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	files := 0
	for parts := 0; ; parts++ {
		p, err := r.NextPart()
		if err == io.EOF {
			return f, nil
		}
		if err != nil {
			return f, err
		}
		if parts == maxFormParts {
			return f, ErrFormTooLarge
		}
		name := p.FormName()
		switch {
		case name == "":
		case p.FileName() == "" && name == "model":
			f.Models++
			v, err := io.ReadAll(io.LimitReader(p, maxFormModel+1))
			if err != nil {
				return f, err
			}
			if len(v) > maxFormModel {
				return f, fmt.Errorf("%w: the model field is longer than %d bytes", ErrFormTooLarge, maxFormModel)
			}
			if f.Models == 1 {
				f.Model = string(v)
			}
		case p.FileName() != "" && name == "file":
			files++
			if files == 1 {
				n, err := io.Copy(io.Discard, p)
				if err != nil {
					return f, err
				}
				f.File, f.FileEmpty = true, n == 0
			}
		}
		// The rest of each part is skipped by the next NextPart.
	}
}
