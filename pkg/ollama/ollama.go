// Package ollama is the narrow Ollama client a worker needs: its inventory
// (version, installed and loaded models) through Ollama's own api client, and a
// raw POST whose response bytes are relayed frame by frame.
//
// It imports Ollama's api package and the standard library only.
package ollama

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ollama/ollama/api"
)

// Client talks to one Ollama server.
type Client struct {
	base *url.URL
	http *http.Client
	api  *api.Client
}

// New returns a client for the Ollama at base, e.g. http://127.0.0.1:11434.
func New(base *url.URL) *Client {
	hc := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // Loading a model can take minutes before the first byte.
	}}
	return &Client{base: base, http: hc, api: api.NewClient(base, hc)}
}

// URL returns the server's base URL.
func (c *Client) URL() *url.URL { return c.base }

// Inventory is what an Ollama server has.
type Inventory struct {
	Version string
	Models  []api.ListModelResponse    // installed (/api/tags)
	Loaded  []api.ProcessModelResponse // in memory (/api/ps)
}

// Inventory asks the server for its version, installed and loaded models.
func (c *Client) Inventory(ctx context.Context) (Inventory, error) {
	var inv Inventory
	v, err := c.api.Version(ctx)
	if err != nil {
		return inv, fmt.Errorf("ollama version: %w", err)
	}
	tags, err := c.api.List(ctx)
	if err != nil {
		return inv, fmt.Errorf("ollama tags: %w", err)
	}
	ps, err := c.api.ListRunning(ctx)
	if err != nil {
		return inv, fmt.Errorf("ollama ps: %w", err)
	}
	inv.Version, inv.Models, inv.Loaded = v, tags.Models, ps.Models
	return inv, nil
}

// Do sends body to route with method and returns Ollama's response, whatever
// its status. The caller closes the body.
func (c *Client) Do(ctx context.Context, method, route string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(route).String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("ollama %s: %w", route, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ollama %s: %w", route, err)
	}
	return resp, nil
}

// ErrorMessage extracts the message of an Ollama error body, native
// ({"error": "..."}) or OpenAI-shaped ({"error": {"message": "..."}}), or
// returns the body itself when it is neither.
func ErrorMessage(body []byte) string {
	var e api.StatusError
	if err := json.Unmarshal(body, &e); err == nil && e.ErrorMessage != "" {
		return e.ErrorMessage
	}
	var oe struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &oe); err == nil && oe.Error.Message != "" {
		return oe.Error.Message
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return ""
	}
	return string(bytes.TrimSpace(body))
}

// maxPiece bounds a frame of a body that is neither NDJSON nor SSE.
const maxPiece = 256 << 10

// Frames splits a response body into the frames a worker relays: one NDJSON
// line (with its newline) at a time, one server-sent event (through its blank
// line) at a time, or, for any other content, pieces of up to 256 KiB. yield's
// error stops the split and is returned.
func Frames(body io.Reader, contentType string, yield func([]byte) error) error {
	mt, _, _ := mime.ParseMediaType(contentType)
	br := bufio.NewReader(body) // Lines longer than its 4 KiB grow as needed.
	switch mt {
	case "application/x-ndjson":
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				if yerr := yield(line); yerr != nil {
					return yerr
				}
			}
			if err != nil {
				return eof(err)
			}
		}
	case "text/event-stream":
		var ev []byte
		for {
			line, err := br.ReadBytes('\n')
			ev = append(ev, line...)
			if (bytes.Equal(line, []byte("\n")) || bytes.Equal(line, []byte("\r\n")) || err != nil) && len(ev) > 0 {
				if yerr := yield(ev); yerr != nil {
					return yerr
				}
				ev = nil
			}
			if err != nil {
				return eof(err)
			}
		}
	default:
		// Most such bodies are one small JSON object: grow each piece as it
		// fills rather than allocating the largest piece up front.
		for {
			var piece bytes.Buffer
			_, err := piece.ReadFrom(io.LimitReader(br, maxPiece))
			if piece.Len() > 0 {
				if yerr := yield(piece.Bytes()); yerr != nil {
					return yerr
				}
			}
			if err != nil {
				return err
			}
			if piece.Len() < maxPiece {
				return nil // The limit was not reached: the body ended.
			}
		}
	}
}

func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// ModelNames returns the names of the installed models.
func (inv Inventory) ModelNames() []string {
	out := make([]string, len(inv.Models))
	for i, m := range inv.Models {
		out[i] = m.Model
	}
	return out
}
