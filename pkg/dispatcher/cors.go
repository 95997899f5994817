package dispatcher

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
)

// Ollama's CORS settings (server/routes.go with gin-contrib/cors defaults):
// loopback origins on any port, app and editor schemes, plus OLLAMA_ORIGINS.
// Browser extensions are not among the defaults: gin-contrib/cors's
// AllowBrowserExtensions, which Ollama sets, only lets OLLAMA_ORIGINS name
// extension origins (chrome-extension://*, moz-extension://abc); any other
// extension gets 403 like any foreign site, so that no installed extension
// can drive the fleet unless the operator says so.
var (
	corsMethods = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
	corsHeaders = "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta," +
		"X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,X-Stainless-Helper-Method," +
		"X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,X-Stainless-Poll-Helper," +
		"X-Stainless-Retry-Count,X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout"
)

// allowedOrigins returns Ollama's default origins plus extra.
func allowedOrigins(extra []string) []string {
	origins := append([]string{}, extra...)
	for _, host := range []string{"localhost", "127.0.0.1", "0.0.0.0"} {
		origins = append(origins, "http://"+host, "https://"+host,
			"http://"+net.JoinHostPort(host, "*"), "https://"+net.JoinHostPort(host, "*"))
	}
	return append(origins, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
}

// originAllowed reports whether origin is one of the allowed origins, where a * in
// an allowed origin matches any run of characters.
func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.live().origins {
		if o == "*" || o == origin {
			return true
		}
		if prefix, suffix, ok := strings.Cut(o, "*"); ok && len(origin) >= len(prefix)+len(suffix) &&
			strings.HasPrefix(origin, prefix) && strings.HasSuffix(origin, suffix) {
			return true
		}
	}
	return false
}

// cors applies Ollama's CORS rules: a disallowed origin gets 403, a preflight
// 204 with the allowed methods and headers. /metrics never gets CORS
// headers: Prometheus sends no Origin, and no web page, of an allowed
// origin or not, may read the fleet's metrics from a browser.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "" || origin == "http://"+r.Host || origin == "https://"+r.Host {
			next.ServeHTTP(w, r)
			return
		}
		if !s.originAllowed(origin) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "43200")
			h.Add("Vary", "Origin")
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Vary", "Origin")
		next.ServeHTTP(w, r)
	})
}

// guardHost is Ollama's DNS-rebinding guard: when the API listens on loopback
// only, a request naming a non-local host is refused with 403. Like
// Ollama's it answers an OPTIONS request for a local host name (not an
// address) itself, 204, whatever the path: such a request reaches it only
// without a CORS Origin (cors answers preflights first).
func (s *Server) guardHost(next http.Handler) http.Handler {
	if !s.opts.LoopbackOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		switch local, name := localHost(host); {
		case local && name && r.Method == http.MethodOptions:
			w.WriteHeader(http.StatusNoContent)
		case local:
			next.ServeHTTP(w, r)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	})
}

// localHost reports whether a Host header names this machine or a local
// network, as Ollama's allowedHostsMiddleware does, and whether it does so
// by name rather than by address.
func localHost(host string) (local, name bool) {
	host = strings.ToLower(host)
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return addr.IsLoopback() || addr.IsPrivate() || addr.IsUnspecified(), false
	}
	if host == "" || host == "localhost" {
		return true, true
	}
	if h, err := os.Hostname(); err == nil && host == strings.ToLower(h) {
		return true, true
	}
	for _, tld := range []string{".localhost", ".local", ".internal"} {
		if strings.HasSuffix(host, tld) {
			return true, true
		}
	}
	return false, false
}
