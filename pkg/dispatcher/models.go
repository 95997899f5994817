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

func (s *Server) handleOpenAIModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	c, err := job.CanonicalModel(name)
	if err == nil && visible(r, name) { // A model the key may not use is one it cannot see.
		for _, m := range s.view.Models() {
			if mc, err := job.CanonicalModel(m.Model); err == nil && mc == c {
				writeOpenAIJSON(w, openai.Model{Id: name, Object: "model", Created: m.ModifiedAt.Unix(),
					OwnedBy: model.ParseName(name).Namespace})
				return
			}
		}
	}
	openAI.failForwarded(w, http.StatusNotFound, "model '"+name+"' not found")
}
