package ollamasim

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ollama/ollama/types/model"
)

// A request names its model as Ollama 0.32's internal/modelref reads it: a
// ":cloud" suffix (or a tag ending in "-cloud") asks for the model on
// ollama.com, a ":local" suffix for the local one, and both at once is an
// error. The simulator has no cloud: it answers cloud requests as an Ollama
// with no internet does (see cloudUnreachable).

var (
	errModelRequired   = errors.New("model is required")
	errConflictingRefs = errors.New("use either :local or :cloud, not both")
	errInvalidName     = errors.New("invalid model name")
)

// modelRef is a parsed model reference.
type modelRef struct {
	base  string     // the name without its source suffix
	name  model.Name // base, parsed with defaults
	cloud bool       // ":cloud" or a "-cloud" tag
}

// parseModelRef is Ollama's parseAndValidateModelRef. Its errors are
// errModelRequired, errConflictingRefs (wrapped with the name) and
// errInvalidName.
func parseModelRef(raw string) (modelRef, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return modelRef{}, errModelRequired
	}
	base, cloud, explicit := sourceSuffix(raw)
	if explicit {
		if _, _, nested := sourceSuffix(base); nested {
			return modelRef{}, fmt.Errorf("%w: %q", errConflictingRefs, raw)
		}
	}
	n := model.ParseName(base)
	if !n.IsValid() {
		return modelRef{}, errInvalidName
	}
	return modelRef{base: base, name: n, cloud: cloud}, nil
}

// sourceSuffix is modelref's parseSourceSuffix.
func sourceSuffix(raw string) (base string, cloud, explicit bool) {
	i := strings.LastIndex(raw, ":")
	if i < 0 {
		return raw, false, false
	}
	suffixRaw := strings.TrimSpace(raw[i+1:])
	switch suffix := strings.ToLower(suffixRaw); {
	case suffix == "cloud":
		return raw[:i], true, true
	case suffix == "local":
		return raw[:i], false, true
	case !strings.Contains(suffixRaw, "/") && strings.HasSuffix(suffix, "-cloud"):
		return raw[:i+1] + suffixRaw[:len(suffixRaw)-len("-cloud")], true, true
	}
	return raw, false, false
}

// pullName is Ollama's parseNormalizePullModelRef: a cloud model is pulled
// under its legacy stub name, "name:tag-cloud" or "name:cloud".
func pullName(raw string) (model.Name, error) {
	ref, err := parseModelRef(raw)
	if err != nil {
		return model.Name{}, err
	}
	name := ref.base
	if ref.cloud {
		if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
			name += "-cloud"
		} else {
			name += ":cloud"
		}
	}
	n := model.ParseName(name)
	if !n.IsValid() {
		return model.Name{}, errInvalidName
	}
	return n, nil
}

// writeModelRefError answers a parseModelRef error as Ollama's
// writeModelRefParseError does: 400 for conflicting suffixes and invalid
// names, the handler's own answer for a missing name.
func writeModelRefError(w http.ResponseWriter, err error, status int, msg string) {
	switch {
	case errors.Is(err, errConflictingRefs), errors.Is(err, errInvalidName):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, status, msg)
	}
}
