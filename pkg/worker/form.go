package worker

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// checkJobModel returns a complaint when a job for rt names another model
// than the subject it was published on. A form (a transcription) must say
// it is one, be readable, and name its model once: the model checked must
// be the model that runs, or a client allowed one model could run another.
// Other bodies are JSON, whatever the job's headers say (checkModel).
func checkJobModel(rt job.Route, h nats.Header, body []byte, model string) string {
	if !rt.Form {
		return checkModel(body, model)
	}
	f, err := job.ReadForm(body, h.Get(job.HeaderBodyType))
	switch {
	case err != nil:
		return fmt.Sprintf("failed to parse multipart form: %v (a job for %s states its form's Content-Type in %s)", err, rt.Path, job.HeaderBodyType)
	case f.Models > 1:
		return job.ErrAmbiguousModel.Error() + ` ("model" appears twice in the form)`
	case f.Models == 0 || f.Model == "":
		return "" // Ollama answers "model is required" and runs nothing.
	}
	if c, err := job.CanonicalModel(f.Model); err != nil || c != model {
		return fmt.Sprintf("job for model %q was published on the subject of model %q", f.Model, model)
	}
	return ""
}

// bodyType is the Content-Type the task's body goes to Ollama with.
func (t *task) bodyType() string {
	if rt, _ := job.LookupRoute(t.route); rt.Form && t.msg != nil {
		return t.msg.Headers().Get(job.HeaderBodyType) // checkJobModel read the form with it.
	}
	return "application/json"
}
