package dispatcher

import (
	"net/http"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// /v1/audio/transcriptions (Ollama 0.20+) is queued as it came: a
// multipart/form-data body, at most Options.MaxBody, whose Content-Type the
// job carries (queue.Job.BodyType) and whose "model" field names the model.
// The worker reads the form again before it runs the job, as it checks the
// model of a JSON body (docs/protocol.md).

// transcriptions is the one route whose body is a form (job.Route.Form).
const transcriptions = "/v1/audio/transcriptions"

// validateForm makes the checks of Ollama's TranscriptionMiddleware before
// it looks the model up, with its messages, and returns the form's model
// and Content-Type; it writes the error and returns ok=false otherwise. A
// model in the URL's query, which Ollama would take before the form's, is
// refused: the job carries the body only, so the worker's Ollama would run
// the form's.
func validateForm(w http.ResponseWriter, r *http.Request, body []byte) (model, bodyType string, ok bool) {
	bodyType = r.Header.Get("Content-Type")
	f, err := job.ReadForm(body, bodyType)
	var msg string
	switch {
	case err != nil:
		msg = "failed to parse multipart form: " + err.Error()
	case r.URL.Query().Has("model"):
		msg = "name the model in the form's model field, not in the URL: OllamaMax queues the form only (docs/api.md)"
	case f.Model == "":
		msg = "model is required"
	case f.Models > 1:
		msg = job.ErrAmbiguousModel.Error() + ` ("model" appears twice in the form)`
	case !f.File:
		msg = "file is required: http: no such file"
	case f.FileEmpty:
		msg = "audio file is empty"
	default:
		return f.Model, bodyType, true
	}
	openAI.fail(w, http.StatusBadRequest, msg)
	return "", "", false
}
