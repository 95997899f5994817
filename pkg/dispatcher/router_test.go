package dispatcher_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// shim returns a dispatcher's handler on f's queue, as it runs listening on
// loopback (Ollama's host guard on) or not.
func shim(t *testing.T, f *fleettest.Fleet, loopback bool) http.Handler {
	t.Helper()
	req, err := queue.NewRequester(f.NC, f.Queue, "shim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	srv, err := dispatcher.NewServer(f.Queue, req, f.View, dispatcher.Options{MaxBody: 1 << 20, LoopbackOnly: loopback,
		Logger: fleettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

type routing struct {
	name, method, target string
	header               map[string]string
	status               int
	location, allow, ct  string
	body                 string // the whole body, when not empty
}

func (c routing) check(t *testing.T, h http.Handler) {
	t.Helper()
	r := httptest.NewRequest(c.method, c.target, strings.NewReader(`{"model":"llama3.2","prompt":"x"}`))
	r.Host = "localhost:11435"
	for k, v := range c.header {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	got := w.Result()
	if got.StatusCode != c.status || got.Header.Get("Location") != c.location || got.Header.Get("Allow") != c.allow ||
		got.Header.Get("Content-Type") != c.ct || c.body != "" && w.Body.String() != c.body {
		t.Errorf("%s %s: got %d Location %q Allow %q Content-Type %q body %q\nwant %d Location %q Allow %q Content-Type %q body %q",
			c.method, c.target, got.StatusCode, got.Header.Get("Location"), got.Header.Get("Allow"), got.Header.Get("Content-Type"), w.Body.String(),
			c.status, c.location, c.allow, c.ct, c.body)
	}
}

// TestRoutingAsOllama: paths, methods and OPTIONS are answered as Ollama
// 0.32.15 answers them (each case was asked of a real one with curl): its
// ServeMux redirects unclean paths, gin redirects a trailing slash and
// answers 405 with Allow or 404, and its host guard answers OPTIONS.
func TestRoutingAsOllama(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	const (
		html     = "text/html; charset=utf-8"
		plain    = "text/plain"
		notFound = "404 page not found"
	)
	cases := []routing{
		// Go's ServeMux: a path that is not clean, any method, any path.
		{name: "double slash", method: "GET", target: "//api/generate", status: 307, location: "/api/generate", ct: html,
			body: "<a href=\"/api/generate\">Temporary Redirect</a>.\n\n"},
		{name: "double slash inside", method: "POST", target: "/api//generate", status: 307, location: "/api/generate"},
		{name: "dot segment", method: "GET", target: "/./api/tags", status: 307, location: "/api/tags", ct: html},
		{name: "dot segment, not a route for the method", method: "POST", target: "/./api/tags", status: 307, location: "/api/tags"},
		{name: "dot-dot segment", method: "DELETE", target: "/api/../api/tags", status: 307, location: "/api/tags"},
		{name: "query kept", method: "GET", target: "//api/tags?x=1", status: 307, location: "/api/tags?x=1", ct: html},
		{name: "escaped dots are no dot segment", method: "GET", target: "/api/%2e%2e/api/tags", status: 404, ct: plain, body: notFound},
		// gin: a trailing slash of a route for the method.
		{name: "trailing slash GET", method: "GET", target: "/api/tags/", status: 301, location: "/api/tags", ct: html},
		{name: "trailing slash HEAD", method: "HEAD", target: "/api/tags/", status: 307, location: "/api/tags", ct: html},
		{name: "trailing slash POST", method: "POST", target: "/api/generate/", status: 307, location: "/api/generate"},
		{name: "trailing slash of a parameter route", method: "GET", target: "/v1/models/llama3.2/", status: 301, location: "/v1/models/llama3.2", ct: html},
		{name: "trailing slash behind a proxy prefix", method: "GET", target: "/api/tags/", header: map[string]string{"X-Forwarded-Prefix": "/a b/../c"},
			status: 301, location: "/c/api/tags", ct: html},
		{name: "trailing slash, route of another method", method: "GET", target: "/api/generate/", status: 404, ct: plain, body: notFound},
		{name: "trailing slash, no HEAD route", method: "HEAD", target: "/api/ps/", status: 404, ct: plain},
		// gin: the methods of each route.
		{name: "HEAD of a route Ollama serves HEAD", method: "HEAD", target: "/api/tags", status: 200, ct: "application/json; charset=utf-8"},
		{name: "HEAD of a GET-only route", method: "HEAD", target: "/api/ps", status: 405, allow: "GET", ct: plain},
		{name: "HEAD of /v1/models", method: "HEAD", target: "/v1/models", status: 405, allow: "GET", ct: plain},
		{name: "Allow in gin's tree order", method: "POST", target: "/", status: 405, allow: "HEAD, GET", ct: plain, body: "405 method not allowed"},
		{name: "status wrong method", method: "POST", target: "/api/status", status: 405, allow: "GET", ct: plain},
		{name: "model with a namespace is no model route", method: "GET", target: "/v1/models/library/llama3.2", status: 404, ct: plain, body: notFound},
		{name: "escaped slash is no model route", method: "GET", target: "/v1/models/library%2Fllama3.2", status: 404, ct: plain, body: notFound},
		{name: "escaped letters", method: "GET", target: "/api/%74ags", status: 200, ct: "application/json; charset=utf-8"},
		// OPTIONS, on a loopback listener: Ollama's host guard answers it.
		{name: "OPTIONS by host name", method: "OPTIONS", target: "/api/tags", status: 204, allow: "HEAD, GET"},
		{name: "OPTIONS of no route", method: "OPTIONS", target: "/nonexistent", status: 204},
		{name: "OPTIONS by address", method: "OPTIONS", target: "/api/tags", header: map[string]string{"Host": "127.0.0.1:11435"},
			status: 405, allow: "HEAD, GET", ct: plain},
		{name: "OPTIONS of no route by address", method: "OPTIONS", target: "/nonexistent", header: map[string]string{"Host": "127.0.0.1:11435"},
			status: 404, ct: plain},
		{name: "OPTIONS from a foreign host", method: "OPTIONS", target: "/api/tags", header: map[string]string{"Host": "evil.test"},
			status: 403, allow: "HEAD, GET"},
		{name: "OPTIONS from a foreign origin", method: "OPTIONS", target: "/nonexistent", header: map[string]string{"Origin": "http://evil.test"},
			status: 403},
		{name: "preflight from a foreign host", method: "OPTIONS", target: "/api/generate",
			header: map[string]string{"Host": "evil.test", "Origin": "http://localhost:3000"}, status: 204, allow: "POST"},
	}
	h := shim(t, f, true)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.check(t, h) })
	}

	// Listening beyond loopback, Ollama has no host guard: OPTIONS is a
	// method like another.
	open := shim(t, f, false)
	for _, c := range []routing{
		{name: "OPTIONS", method: "OPTIONS", target: "/api/tags", status: 405, allow: "HEAD, GET", ct: plain},
		{name: "OPTIONS of no route", method: "OPTIONS", target: "/nonexistent", status: 404, ct: plain},
	} {
		t.Run("beyond loopback "+c.name, func(t *testing.T) { c.check(t, open) })
	}
}

// TestEveryRouteOfTheTableIsRouted: each route the table does not mark
// removed reaches a handler with its method: no router 404 or 405.
func TestEveryRouteOfTheTableIsRouted(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	h := shim(t, f, true)
	fill := strings.NewReplacer("{digest}", "sha256:abc", "{model}", "llama3.2", "{encodedKey}", "abc")
	for _, rt := range job.Routes() {
		if rt.Serve == job.Removed {
			continue
		}
		r := httptest.NewRequest(rt.Method, fill.Replace(rt.Path), strings.NewReader(`{}`))
		r.Host = "localhost"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if body := w.Body.String(); body == "404 page not found" || body == "405 method not allowed" {
			t.Errorf("%s %s: %d %s, want its handler's answer", rt.Method, rt.Path, w.Code, body)
		}
	}
}

// TestRemovedRoutesAnswer404: every route current Ollama removed answers
// its router's 404, for its old method and any other.
func TestRemovedRoutesAnswer404(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	h := shim(t, f, true)
	removed := 0
	for _, rt := range job.Routes() {
		if rt.Serve != job.Removed {
			continue
		}
		removed++
		for _, method := range []string{rt.Method, "GET", "POST", "DELETE"} {
			routing{method: method, target: rt.Path, status: 404, ct: "text/plain", body: "404 page not found"}.check(t, h)
		}
	}
	if removed == 0 {
		t.Fatal("the route table has no removed route to test")
	}
}
