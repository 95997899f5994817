package dispatcher

import (
	"net/http"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Routing as Ollama's HTTP stack does it, which clients see before any
// handler runs. Ollama serves its gin engine through Go's default ServeMux
// (server/routes.go, http.Handle("/", h)), so a request passes:
//
//  1. the ServeMux: a path that is not clean (//api/generate, /./api/tags,
//     /api/../api/tags) is redirected to its clean form, 307, whatever the
//     method and whether the clean path is a route;
//  2. gin's router: a path with a trailing slash whose trimmed form is a
//     route for the method is redirected to it, 301 for GET and 307
//     otherwise (RedirectTrailingSlash), before any middleware;
//  3. gin's middleware (CORS, the host guard) and then the handler, or, for
//     a path that is a route only for other methods, 405 with Allow (in
//     the order of gin's method trees), else 404. The middleware runs on
//     those too, so a 403 of the host guard or the 204 of an OPTIONS
//     request carries the Allow header of the 405 it replaced.
//
// gin matches the decoded path, one segment per parameter: /v1/models/a/b
// and /v1/models/a%2Fb are no model route.

// router holds the routes the dispatcher serves, by method, for the
// decisions its ServeMux cannot make as gin does (the ServeMux serves GET
// routes to HEAD requests and knows no trailing-slash redirect).
type router struct {
	routes []routePattern
}

// methodOrder is the order of gin's method trees in Ollama's engine (the
// order of their first routes), which is the order of an Allow header.
var methodOrder = []string{http.MethodHead, http.MethodGet, http.MethodPost, http.MethodDelete}

type routePattern struct {
	method string
	segs   []string // a segment "{name}" matches any one non-empty segment
}

// add registers the route method path; path uses ServeMux's {name}
// wildcards for one segment.
func (rt *router) add(method, p string) {
	if !slices.Contains(methodOrder, method) {
		panic("dispatcher: no route of Ollama's has the method " + method) // A programming error.
	}
	rt.routes = append(rt.routes, routePattern{method, strings.Split(p, "/")})
}

// match tells whether method p is a route.
func (rt *router) match(method, p string) bool {
	segs := strings.Split(p, "/")
	for _, r := range rt.routes {
		if r.method == method && r.matches(segs) {
			return true
		}
	}
	return false
}

func (r routePattern) matches(segs []string) bool {
	if len(segs) != len(r.segs) {
		return false
	}
	for i, s := range r.segs {
		if strings.HasPrefix(s, "{") {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if s != segs[i] {
			return false
		}
	}
	return true
}

// allowed returns the other methods p is a route for, as gin's Allow
// header lists them; nil when it is none or a route for method itself.
func (rt *router) allowed(method, p string) []string {
	if rt.match(method, p) {
		return nil
	}
	var out []string
	for _, m := range methodOrder {
		if m != method && rt.match(m, p) {
			out = append(out, m)
		}
	}
	return out
}

// ginRoute makes steps 1 and 2 above, and sets Allow on a request that
// will get 405 unless a middleware answers it first.
func (s *Server) ginRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			escaped := r.URL.EscapedPath()
			if clean := cleanPath(escaped); clean != escaped {
				// As the ServeMux builds it: the clean escaped path as a Path.
				u := &url.URL{Path: clean, RawQuery: r.URL.RawQuery}
				http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
				return
			}
			if p := r.URL.Path; p != "/" && strings.HasSuffix(p, "/") && s.router.match(r.Method, strings.TrimSuffix(p, "/")) {
				redirectTrailingSlash(w, r)
				return
			}
		}
		if allow := s.router.allowed(r.Method, r.URL.Path); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the ServeMux's: path.Clean that keeps a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

var (
	forwardedPrefixUnsafe = regexp.MustCompile(`[^a-zA-Z0-9/-]+`)
	repeatedSlashes       = regexp.MustCompile(`/{2,}`)
)

// redirectTrailingSlash is gin's: to the path without its trailing slash,
// behind a cleaned X-Forwarded-Prefix, 301 for GET and 307 otherwise.
func redirectTrailingSlash(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if prefix := path.Clean(r.Header.Get("X-Forwarded-Prefix")); prefix != "." {
		prefix = forwardedPrefixUnsafe.ReplaceAllString(prefix, "")
		prefix = repeatedSlashes.ReplaceAllString(prefix, "/")
		p = prefix + "/" + r.URL.Path
	}
	u := *r.URL
	u.Path = p + "/"
	if n := len(p); n > 1 && p[n-1] == '/' {
		u.Path = p[:n-1]
	}
	code := http.StatusMovedPermanently
	if r.Method != http.MethodGet {
		code = http.StatusTemporaryRedirect
	}
	http.Redirect(w, r, u.String(), code)
}
