package job

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidModel is returned for a model name that Ollama would not accept.
var ErrInvalidModel = errors.New("job: invalid model name")

const (
	defaultHost      = "registry.ollama.ai"
	defaultNamespace = "library"
	defaultTag       = "latest"
)

// CanonicalModel returns the one name OllamaMax uses for an Ollama model: the
// shortest display form Ollama itself prints (as /api/tags does), lower-cased,
// always with a tag. "llama3.2", "Llama3.2:latest" and
// "registry.ollama.ai/library/llama3.2:latest" all become "llama3.2:latest";
// "hf.co/org/repo:Q4_K_M" becomes "hf.co/org/repo:q4_k_m".
//
// Ollama looks names up case-insensitively, so lower-casing loses nothing when
// matching; the name sent to Ollama in a job body is the client's, unchanged.
// Like Ollama 0.32 it drops surrounding whitespace and a ":local" suffix,
// which says where to run the model, not which ("llama3.2:8b:local" is
// "llama3.2:8b").
func CanonicalModel(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if i := strings.LastIndexByte(n, ':'); i >= 0 && strings.TrimSpace(n[i+1:]) == "local" {
		n = strings.TrimSpace(n[:i])
	}
	if n == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidModel)
	}
	tag := defaultTag
	if i := strings.LastIndexByte(n, ':'); i > strings.LastIndexByte(n, '/') {
		tag = n[i+1:]
		n = n[:i]
	}
	parts := strings.Split(n, "/")
	if len(parts) > 3 {
		return "", fmt.Errorf("%w: %q has too many parts", ErrInvalidModel, name)
	}
	if !validPart(tag) {
		return "", fmt.Errorf("%w: %q", ErrInvalidModel, name)
	}
	for i, p := range parts {
		isHost := len(parts) == 3 && i == 0
		if isHost && !validHost(p) || !isHost && !validPart(p) {
			return "", fmt.Errorf("%w: %q", ErrInvalidModel, name)
		}
	}
	// Drop the default host and namespace, as Ollama's display form does.
	if len(parts) == 3 && parts[0] == defaultHost {
		parts = parts[1:]
	}
	if len(parts) == 2 && parts[0] == defaultNamespace {
		parts = parts[1:]
	}
	return strings.Join(parts, "/") + ":" + tag, nil
}

// validPart reports whether s matches Ollama's [a-z0-9_][a-z0-9_.-]* for a
// namespace, model or tag (after lower-casing).
func validPart(s string) bool {
	if s == "" || len(s) > 350 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// validHost accepts a registry host with an optional port.
func validHost(s string) bool {
	host, port, found := strings.Cut(s, ":")
	if !validPart(host) {
		return false
	}
	if !found {
		return true
	}
	if port == "" {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

// EncodeModel turns a canonical model name into a token that is valid in a NATS
// subject, a KV key and a consumer name. Letters, digits and '-' stay as they
// are; every other byte becomes '_' and two lower-case hex digits. The mapping
// is reversible with DecodeModel: "llama3.2:latest" <-> "llama3_2e2_3alatest".
func EncodeModel(canonical string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(canonical) + 8)
	for i := 0; i < len(canonical); i++ {
		c := canonical[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// DecodeModel reverses EncodeModel. It returns ErrInvalidModel for a token
// EncodeModel cannot have produced.
func DecodeModel(token string) (string, error) {
	var b strings.Builder
	b.Grow(len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '_':
			if i+2 >= len(token) {
				return "", fmt.Errorf("%w: token %q: short escape", ErrInvalidModel, token)
			}
			hi, ok1 := unhex(token[i+1])
			lo, ok2 := unhex(token[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: token %q: bad escape", ErrInvalidModel, token)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-':
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("%w: token %q: byte %q", ErrInvalidModel, token, c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// ErrAmbiguousModel is returned by CheckModelKeys for a request body that
// names its model twice.
var ErrAmbiguousModel = errors.New("the request names its model more than once")

// CheckModelKeys refuses a JSON object body with more than one top-level
// key that is "model" (or "name") in any case: Go's decoder, and so Ollama,
// takes the last one it meets, which a re-encoding can change. The model
// that was checked must be the model that runs. A body that is not a JSON
// object passes: the decoders that read it next say what is wrong with it.
func CheckModelKeys(body []byte) error {
	var models, names int
	var err error
	topKeys(body, func(key string) bool {
		switch {
		case strings.EqualFold(key, "model"):
			models++
		case strings.EqualFold(key, "name"):
			names++
		}
		if models > 1 || names > 1 {
			err = fmt.Errorf("%w (%q appears twice, in some case)", ErrAmbiguousModel, key)
		}
		return err == nil
	})
	return err
}
