package dispatcher

import (
	"encoding/json"
	"net/http"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
	"github.com/ollama/ollama/types/model"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// The model listings come from the node bucket: no job, no worker round trip.

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ListResponse{Models: visibleModels(r, s.view.Models(), listedName)})
}

func (s *Server) handlePS(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ProcessResponse{Models: visibleModels(r, s.view.Loaded(), loadedName)})
}

// handleOpenAIModels answers /v1/models. Unlike Ollama, an empty list is
// "data":[] rather than null (a quirk we fix).
func (s *Server) handleOpenAIModels(w http.ResponseWriter, r *http.Request) {
	list := openai.ToListCompletion(api.ListResponse{Models: visibleModels(r, s.view.Models(), listedName)})
	if list.Data == nil {
		list.Data = []openai.Model{}
	}
	writeOpenAIJSON(w, list)
}

// writeOpenAIJSON writes v as Ollama's OpenAI middleware does: bare
// application/json, encoder newline.
func writeOpenAIJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // A failed write means the client left.
}

// handleOpenAIModel answers /v1/models/{model} as Ollama's show handler
// behind its retrieve middleware does: the model as named, or show's error
// with the OpenAI type of its status.
func (s *Server) handleOpenAIModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	c, err := job.CanonicalModel(name)
	listed := visibleModels(r, s.view.Models(), listedName) // A model the key may not use is one it cannot see.
	if err == nil {
		for _, m := range listed {
			if mc, err := job.CanonicalModel(m.Model); err == nil && mc == c {
				writeOpenAIJSON(w, openai.Model{Id: name, Object: "model", Created: m.ModifiedAt.Unix(),
					OwnedBy: model.ParseName(name).Namespace})
				return
			}
		}
	}
	names := make([]string, len(listed))
	for i, m := range listed {
		names[i] = m.Model
	}
	status, msg := showNotFound(name, names)
	openAI.failForwarded(w, status, msg)
}
