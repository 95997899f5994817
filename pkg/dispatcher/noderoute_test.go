package dispatcher_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
)

// newerOllama serves, on top of a simulated Ollama, what Ollama 0.32 has
// and the simulator does not: /api/status as 0.32.15 answers it, and the
// web and recommendation routes answering who served them and what they
// were asked (a real one, offline, answers 502 from ollama.com). hits
// counts the requests that reached them.
func newerOllama(i int, sim http.Handler, hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.Method + " " + r.URL.Path
		switch route {
		case "GET /api/status", "POST /api/experimental/web_search", "POST /api/experimental/web_fetch", "GET /api/experimental/model-recommendations":
		default:
			sim.ServeHTTP(w, r)
			return
		}
		hits.Add(1)
		body, _ := io.ReadAll(r.Body) // A test body always reads.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if route == "GET /api/status" {
			_, _ = io.WriteString(w, `{"cloud":{"disabled":false,"source":"none"}}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"worker": i, "route": route, "asked": string(body)})
	})
}

func nodeRouteFleet(t *testing.T, o fleettest.Options, versions ...string) (*fleettest.Fleet, []*atomic.Int64) {
	t.Helper()
	hits := make([]*atomic.Int64, len(versions))
	for i := range hits {
		hits[i] = new(atomic.Int64)
	}
	o.Workers, o.Versions = len(versions), versions
	o.Ollama = func(i int, sim http.Handler) http.Handler { return newerOllama(i, sim, hits[i]) }
	return fleettest.Start(t, o), hits
}

// TestNodeRoutesWithoutAModel: /api/status and the experimental routes go
// to one ready worker whose Ollama has the route; when no worker's Ollama
// has it, the dispatcher answers 404 as such an Ollama does.
func TestNodeRoutesWithoutAModel(t *testing.T) {
	f, hits := nodeRouteFleet(t, fleettest.Options{}, "0.17.4", "0.32.15")

	status, _, body := call(t, "GET", f.URL+"/api/status", "", "")
	if status != http.StatusOK || body != `{"cloud":{"disabled":false,"source":"none"}}` {
		t.Errorf("GET /api/status: %d %s", status, body)
	}
	// Web search is 0.18's: only the 0.32 worker's Ollama may answer it.
	for range 5 {
		status, _, body = call(t, "POST", f.URL+"/api/experimental/web_search", "", `{"query":"nats"}`)
		if status != http.StatusOK || !strings.Contains(body, `"worker":1`) || !strings.Contains(body, `"asked":"{\"query\":\"nats\"}"`) {
			t.Fatalf("POST web_search: %d %s, want worker 1's answer to the query", status, body)
		}
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/experimental/web_fetch", `{"url":"https://nats.io"}`},
		{"GET", "/api/experimental/model-recommendations", ""},
	} {
		status, _, body = call(t, c.method, f.URL+c.path, "", c.body)
		if status != http.StatusOK || !strings.Contains(body, `"worker":1`) {
			t.Errorf("%s %s: %d %s, want worker 1's answer", c.method, c.path, status, body)
		}
	}
	if n := hits[0].Load(); n > 1 {
		t.Errorf("the 0.17 worker's Ollama got %d requests, want at most the one /api/status", n)
	}
	// Chosen workers whose Ollama lacks the route: Ollama's own 404.
	for _, target := range []string{"/api/experimental/web_search?nodes=w0", "/api/experimental/web_search?label=none=x"} {
		status, _, body = call(t, "POST", f.URL+target, "", `{"query":"nats"}`)
		want := http.StatusNotFound
		if strings.Contains(target, "label") {
			want = http.StatusServiceUnavailable // No ready worker chosen at all.
		}
		if status != want {
			t.Errorf("POST %s: %d %s, want %d", target, status, body, want)
		}
	}
	status, _, body = call(t, "POST", f.URL+"/api/experimental/web_search?nodes=w0", "", `{"query":"nats"}`)
	if body != "404 page not found" {
		t.Errorf("web search on a 0.17 worker: %d %q, want Ollama's 404 page not found", status, body)
	}
	// The checks Ollama makes before it forwards.
	status, _, body = call(t, "POST", f.URL+"/api/experimental/web_search", "", "")
	if status != http.StatusBadRequest || body != `{"error":"missing request body"}` {
		t.Errorf("web search without a body: %d %s", status, body)
	}
	status, _, _ = call(t, "GET", f.URL+"/api/experimental/web_search", "", "")
	if status != http.StatusMethodNotAllowed {
		t.Errorf("GET web_search: %d, want 405", status)
	}
}

// TestNodeRoutesOfAnOldFleet: a fleet of 0.17 Ollamas has no web search
// and no recommendations: 404 as each of them would answer, and nothing
// reaches them.
func TestNodeRoutesOfAnOldFleet(t *testing.T) {
	f, hits := nodeRouteFleet(t, fleettest.Options{}, "0.17.4")
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/experimental/web_search"}, {"POST", "/api/experimental/web_fetch"}, {"GET", "/api/experimental/model-recommendations"},
	} {
		if status, _, body := call(t, c.method, f.URL+c.path, "", `{"query":"x"}`); status != http.StatusNotFound || body != "404 page not found" {
			t.Errorf("%s %s: %d %q, want 404 page not found", c.method, c.path, status, body)
		}
	}
	if n := hits[0].Load(); n != 0 {
		t.Errorf("the 0.17 Ollama got %d requests, want none", n)
	}
}

// TestNodeRoutesUnderKeys: the web routes spend the workers' ollama.com
// identity, so they need an admin key; status and recommendations any key.
func TestNodeRoutesUnderKeys(t *testing.T) {
	f, _ := nodeRouteFleet(t, fleettest.Options{Keys: true}, "0.32.15")
	_, admin := f.CreateKey(apikey.Key{Name: "ops", Tenant: "ops", Role: apikey.Admin})
	_, user := f.CreateKey(apikey.Key{Name: "dev", Tenant: "acme", Role: apikey.User})
	for _, c := range []struct {
		method, path    string
		user, admin     int
		userMsgContains string
	}{
		{"GET", "/api/status", 200, 200, ""},
		{"GET", "/api/experimental/model-recommendations", 200, 200, ""},
		{"POST", "/api/experimental/web_search", 403, 200, "needs an admin API key"},
		{"POST", "/api/experimental/web_fetch", 403, 200, "needs an admin API key"},
	} {
		for _, k := range []struct {
			name, secret string
			want         int
		}{{"user", user, c.user}, {"admin", admin, c.admin}, {"none", "", http.StatusUnauthorized}} {
			status, _, body := call(t, c.method, f.URL+c.path, k.secret, `{"query":"x"}`)
			if status != k.want || k.name == "user" && !strings.Contains(body, c.userMsgContains) {
				t.Errorf("%s %s with the %s key: %d %s, want %d", c.method, c.path, k.name, status, body, k.want)
			}
		}
	}
}
