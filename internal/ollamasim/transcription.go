package ollamasim

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// maxTranscriptionBody bounds a /v1/audio/transcriptions upload. Ollama
// keeps 25 MB of a form in memory and spills the rest to disk, unbounded.
const maxTranscriptionBody = 64 << 20

// handleTranscriptions serves POST /v1/audio/transcriptions, a port of
// Ollama's TranscriptionMiddleware: a multipart form with the model and the
// audio file becomes a streamed chat whose user message carries the audio
// as an image, and the answer is the whole text at the end, as JSON or, with
// response_format "text", plain. A model with neither the "audio" nor the
// "vision" capability refuses the audio as Ollama's runner does (400).
//
// Like Ollama's (as its code reads; there is no audio model here to ask),
// the answer goes out with the chat stream's content type,
// application/x-ndjson: the middleware sets its own only with the last
// chunk, after the first flush has sent the headers.
func (s *Server) handleTranscriptions(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTranscriptionBody)
	if err := r.ParseMultipartForm(25 << 20); err != nil {
		writeCompatError(w, http.StatusBadRequest, "failed to parse multipart form: "+err.Error())
		return
	}
	defer func() {
		// Parts beyond the memory bound went to temporary files; Ollama
		// leaves them to net/http, which only cleans up its own requests.
		_ = r.MultipartForm.RemoveAll() // nothing to do if a file is already gone
	}()
	name := r.FormValue("model")
	if name == "" {
		writeCompatError(w, http.StatusBadRequest, "model is required")
		return
	}
	file, _, err := r.FormFile("file")
	if err != nil {
		writeCompatError(w, http.StatusBadRequest, "file is required: "+err.Error())
		return
	}
	defer file.Close()
	audio, err := io.ReadAll(file)
	if err != nil {
		writeCompatError(w, http.StatusInternalServerError, "failed to read audio file")
		return
	}
	if len(audio) == 0 {
		writeCompatError(w, http.StatusBadRequest, "audio file is empty")
		return
	}
	req := openai.TranscriptionRequest{
		Model:          name,
		AudioData:      audio,
		ResponseFormat: r.FormValue("response_format"),
		Language:       r.FormValue("language"),
		Prompt:         r.FormValue("prompt"),
	}
	chatReq, err := openai.FromTranscriptionRequest(req)
	if err != nil {
		writeCompatError(w, http.StatusBadRequest, err.Error())
		return
	}
	conv := &transcriptionConverter{format: req.ResponseFormat}
	s.relay(w, r, chatReq, conv.convert, s.handleChat)
}

// transcriptionConverter is the middleware's TranscriptionWriter.
type transcriptionConverter struct {
	format string
	text   strings.Builder
}

func (c *transcriptionConverter) convert(cw *compatWriter, data []byte) error {
	var resp api.ChatResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return err
	}
	c.text.WriteString(resp.Message.Content)
	if !resp.Done {
		return nil
	}
	text := strings.TrimSpace(c.text.String())
	if c.format == "text" {
		return cw.send("text/plain", []byte(text))
	}
	return cw.sendJSON(openai.TranscriptionResponse{Text: text})
}
