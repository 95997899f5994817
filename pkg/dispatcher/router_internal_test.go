package dispatcher

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzRouting: any method and path is routed without a panic; a redirect
// of an unclean path leads to a clean one, and one of a trailing slash to
// a route of the method.
func FuzzRouting(f *testing.F) {
	for _, p := range []string{"/", "//api/generate", "/api/tags/", "/./api/../api/tags", "/v1/models/a/", "/v1/models//x", "/%2e%2e/", "", "api", "/api/tags//"} {
		f.Add("GET", p, "")
		f.Add("POST", p, "/prefix")
	}
	s := &Server{}
	for _, r := range [][2]string{{"GET", "/"}, {"HEAD", "/"}, {"GET", "/api/tags"}, {"HEAD", "/api/tags"}, {"POST", "/api/generate"},
		{"GET", "/v1/models/{model}"}, {"DELETE", "/api/delete"}} {
		s.router.add(r[0], r[1])
	}
	var reached bool
	h := s.ginRoute(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
	f.Fuzz(func(t *testing.T, method, path, prefix string) {
		u, err := url.Parse(path)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return
		}
		r := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: "localhost"}
		if prefix != "" {
			r.Header.Set("X-Forwarded-Prefix", prefix)
		}
		reached = false
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		loc := w.Header().Get("Location")
		switch {
		case reached && loc != "":
			t.Fatalf("%s %q: redirected to %q and served", method, path, loc)
		case !reached && loc == "":
			t.Fatalf("%s %q: neither served nor redirected (%d)", method, path, w.Code)
		case w.Code == http.StatusTemporaryRedirect && prefix == "" && !strings.HasSuffix(u.Path, "/"):
			lu, err := url.Parse(loc)
			if err != nil || cleanPath(lu.EscapedPath()) != lu.EscapedPath() {
				t.Fatalf("%s %q: redirected to %q, not a clean path", method, path, loc)
			}
		}
	})
}
