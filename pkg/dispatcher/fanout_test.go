package dispatcher_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/dispatcher"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

func simHas(t *testing.T, f *fleettest.Fleet, i int, model string) bool {
	t.Helper()
	list, err := client(t, f.SimURLs[i].String()).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(list.Models, func(m api.ListModelResponse) bool { return m.Name == model })
}

func TestPullFansOutToEveryWorker(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	c := client(t, f.URL)
	var progress []api.ProgressResponse
	if err := c.Pull(t.Context(), &api.PullRequest{Model: "tinyllama"}, func(p api.ProgressResponse) error {
		progress = append(progress, p)
		return nil
	}); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if len(progress) < 3 || progress[0].Status != "pulling manifest" || progress[len(progress)-1].Status != "success" {
		t.Fatalf("progress %+v, want pulling manifest ... success", progress)
	}
	// Layer progress is summed over both workers: the last report of a layer
	// is complete and twice one Ollama's total.
	single := map[string]int64{}
	if err := client(t, f.SimURLs[0].String()).Pull(t.Context(), &api.PullRequest{Model: "tinyllama"}, func(p api.ProgressResponse) error {
		if p.Digest != "" {
			single[p.Digest] = p.Total
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	merged := map[string]api.ProgressResponse{}
	for _, p := range progress {
		if p.Digest != "" {
			merged[p.Digest] = p
		}
	}
	if len(merged) == 0 || len(merged) != len(single) {
		t.Fatalf("merged layers %v, one Ollama's %v", merged, single)
	}
	for d, p := range merged {
		if p.Total != 2*single[d] || p.Completed != p.Total {
			t.Errorf("layer %s: %d/%d, want %d/%d", d, p.Completed, p.Total, 2*single[d], 2*single[d])
		}
	}
	for i := range 2 {
		if !simHas(t, f, i, "tinyllama:latest") {
			t.Errorf("worker %d's Ollama has no tinyllama after the pull", i)
		}
	}
	f.WaitFor("the fleet to list the pulled model", func() bool {
		return slices.ContainsFunc(f.View.Models(), func(m api.ListModelResponse) bool { return m.Name == "tinyllama:latest" })
	})
}

func TestPullChoosesWorkers(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	resp, err := http.Post(f.URL+"/api/pull?nodes=w1", "application/json", strings.NewReader(`{"model":"phi3","stream":false}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if simHas(t, f, 0, "phi3:latest") || !simHas(t, f, 1, "phi3:latest") {
		t.Errorf("pull with ?nodes=w1 reached w0=%v w1=%v, want only w1", simHas(t, f, 0, "phi3:latest"), simHas(t, f, 1, "phi3:latest"))
	}
}

func TestPullFailureIsReported(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	err := client(t, f.URL).Pull(t.Context(), &api.PullRequest{Model: "missing-model"}, func(api.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "pull failed on 2 of 2 workers") || !strings.Contains(err.Error(), "file does not exist") {
		t.Fatalf("pull of a missing model: %v, want the workers' failures", err)
	}
	status, _, body := post(t, f.URL+"/api/pull", `{"model":"missing-model","stream":false}`)
	if status != 500 || !strings.Contains(body, "file does not exist") {
		t.Errorf("stream:false got %d %s, want 500 with the reason", status, body)
	}
}

func TestCopyAndDeleteFanOut(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	c := client(t, f.URL)
	if err := c.Copy(t.Context(), &api.CopyRequest{Source: "llama3.2", Destination: "mine"}); err != nil {
		t.Fatalf("copy: %v", err)
	}
	for i := range 2 {
		if !simHas(t, f, i, "mine:latest") {
			t.Fatalf("worker %d's Ollama lacks the copy", i)
		}
	}
	f.WaitFor("the fleet to list the copy", func() bool {
		return slices.ContainsFunc(f.View.Models(), func(m api.ListModelResponse) bool { return m.Name == "mine:latest" })
	})
	if err := c.Delete(t.Context(), &api.DeleteRequest{Model: "mine"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	for i := range 2 {
		if simHas(t, f, i, "mine:latest") {
			t.Errorf("worker %d's Ollama still has the deleted model", i)
		}
	}
	var se api.StatusError
	if err := c.Delete(t.Context(), &api.DeleteRequest{Model: "never"}); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("delete of an unknown model: %v, want 404", err)
	}
	if err := c.Copy(t.Context(), &api.CopyRequest{Source: "never", Destination: "x"}); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("copy of an unknown model: %v, want 404", err)
	}
}

func TestShowAnsweredByAWorker(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	c := client(t, f.URL)
	got, err := c.Show(t.Context(), &api.ShowRequest{Model: "llama3.2"})
	if err != nil {
		t.Fatal(err)
	}
	want, err := client(t, f.SimURLs[0].String()).Show(t.Context(), &api.ShowRequest{Model: "llama3.2"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Modelfile != want.Modelfile || got.Details.Family != want.Details.Family || len(got.ModelInfo) == 0 {
		t.Errorf("show through the dispatcher differs from Ollama's: %+v", got)
	}
	// As Ollama 0.32.15 answers (asked of a real one): the name in its
	// shortest form, each part in the case of a model it has.
	for _, tt := range []struct {
		name   string
		status int
		msg    string
	}{
		{"nope", 404, "model 'nope:latest' not found"},
		{"Nope:LATEST", 404, "model 'Nope:latest' not found"},
		{"registry.ollama.ai/library/nope", 404, "model 'nope:latest' not found"},
		{" nope ", 404, "model 'nope:latest' not found"},
		{"bad name!", 400, "invalid model name"},
	} {
		var se api.StatusError
		if _, err := c.Show(t.Context(), &api.ShowRequest{Model: tt.name}); !errors.As(err, &se) || se.StatusCode != tt.status || se.ErrorMessage != tt.msg {
			t.Errorf("show %q: %v, want %d %s", tt.name, err, tt.status, tt.msg)
		}
	}
}

func TestRefusedRoutesSayWhy(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	for _, c := range []struct{ method, path, why string }{
		{"POST", "/api/create", "/api/pull or /api/copy"},
		{"POST", "/api/push", "/api/pull or /api/copy"},
		{"POST", "/api/blobs/sha256:abc", "/api/pull or /api/copy"},
		{"POST", "/api/me", "ollama signin"},
		{"POST", "/api/signout", "ollama signin"},
		{"DELETE", "/api/user/keys/abc", "ollama signin"},
	} {
		status, _, body := call(t, c.method, f.URL+c.path, "", `{"model":"x"}`)
		if status != http.StatusNotImplemented || !strings.Contains(body, "not supported by OllamaMax") || !strings.Contains(body, c.why) {
			t.Errorf("%s %s: %d %s, want 501 with a reason naming %s", c.method, c.path, status, body, c.why)
		}
	}
}

func TestCORSAndHostGuard(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	req, err := queue.NewRequester(f.NC, f.Queue, "cors")
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	srv, err := dispatcher.NewServer(f.Queue, req, f.View, dispatcher.Options{MaxBody: 1 << 20, LoopbackOnly: true,
		Origins: []string{"https://*.example.com", "moz-extension://abc"}, Logger: fleettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, host, origin string
		status                     int
		allowOrigin                string
	}{
		{"same host", "GET", "127.0.0.1:11435", "", 200, ""},
		{"localhost origin", "GET", "localhost:11435", "http://localhost:3000", 200, "http://localhost:3000"},
		{"preflight", "OPTIONS", "localhost:11435", "http://127.0.0.1:8080", 204, "http://127.0.0.1:8080"},
		// Ollama 0.32 allows browser extensions only when OLLAMA_ORIGINS names them.
		{"extension", "GET", "localhost", "chrome-extension://abc", 403, ""},
		{"extension preflight", "OPTIONS", "localhost", "safari-extension://abc", 403, ""},
		{"configured extension", "GET", "localhost", "moz-extension://abc", 200, "moz-extension://abc"},
		{"another extension of a configured scheme", "GET", "localhost", "moz-extension://abd", 403, ""},
		{"configured wildcard", "GET", "localhost", "https://app.example.com", 200, "https://app.example.com"},
		{"foreign origin", "GET", "localhost", "https://evil.test", 403, ""},
		{"rebinding host", "GET", "evil.test", "", 403, ""},
		{"private address", "GET", "10.0.0.5:11435", "", 200, ""},
		{"local tld", "GET", "gpu.internal", "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://"+tt.host+"/api/version", nil)
			r.Host = tt.host
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			if w.Code != tt.status || w.Header().Get("Access-Control-Allow-Origin") != tt.allowOrigin {
				t.Errorf("got %d, Allow-Origin %q; want %d, %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"), tt.status, tt.allowOrigin)
			}
		})
	}
}
