// Package ollama is the narrow Ollama client a worker needs: its inventory
// (version, installed and loaded models) through Ollama's own api client, and a
// raw POST whose response bytes are relayed frame by frame.
//
// It imports Ollama's api package and the standard library only.
package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ollama/ollama/api"
)

// Client talks to one Ollama server.
type Client struct {
	// Header, if set, adds headers from a request's context to each
	// request Do and DoType send: the worker's trace context
	// (traceparent). Set it before the first request.
	Header func(ctx context.Context, h http.Header)

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

// Do sends the JSON body to route with method and returns Ollama's
// response, whatever its status. The caller closes the body.
func (c *Client) Do(ctx context.Context, method, route string, body []byte) (*http.Response, error) {
	return c.DoType(ctx, method, route, "application/json", body)
}

// DoType is Do for a body of the given Content-Type (a multipart form).
func (c *Client) DoType(ctx context.Context, method, route, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(route).String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("ollama %s: %w", route, err)
	}
	req.Header.Set("Content-Type", contentType)
	if c.Header != nil {
		c.Header(ctx, req.Header)
	}
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

// Unloads tells whether body, for route, asks Ollama to unload its model
// rather than run it: a generate with an empty prompt, or a chat with no
// messages, and keep_alive 0 (its GenerateHandler and ChatHandler answer
// such a request with done_reason "unload" and nothing else).
func Unloads(route string, body []byte) bool {
	switch route {
	case "/api/generate":
		var req api.GenerateRequest
		return json.Unmarshal(body, &req) == nil && req.Prompt == "" && req.KeepAlive != nil && req.KeepAlive.Duration == 0
	case "/api/chat":
		var req api.ChatRequest
		return json.Unmarshal(body, &req) == nil && len(req.Messages) == 0 && req.KeepAlive != nil && req.KeepAlive.Duration == 0
	}
	return false
}

// ModelNames returns the names of the installed models.
func (inv Inventory) ModelNames() []string {
	out := make([]string, len(inv.Models))
	for i, m := range inv.Models {
		out[i] = m.Model
	}
	return out
}
