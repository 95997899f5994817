package ollamasim_test

import (
	"errors"
	"maps"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

// pullConfig is fastConfig with pulls that take no time.
func pullConfig() ollamasim.Config {
	cfg := fastConfig()
	cfg.PullDuration = -1
	return cfg
}

// tagNames lists /api/tags through the client.
func tagNames(t *testing.T, c *api.Client) map[string]api.ListModelResponse {
	t.Helper()
	list, err := c.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	out := make(map[string]api.ListModelResponse, len(list.Models))
	for _, m := range list.Models {
		out[m.Name] = m
	}
	return out
}

var layerDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestPull(t *testing.T) {
	tests := []struct {
		name      string
		req       api.PullRequest
		wantName  string
		wantParts int // progress lines of the weights layer
		wantCaps  []string
	}{
		{"new model", api.PullRequest{Model: "gemma3:1b"}, "gemma3:1b", 4, []string{"completion"}},
		{"deprecated name field", api.PullRequest{Name: "mistral"}, "mistral:latest", 4, []string{"completion"}},
		{"embedding model by name", api.PullRequest{Model: "mxbai-embed-large"}, "mxbai-embed-large:latest", 4, []string{"embedding"}},
		{"namespace and host", api.PullRequest{Model: "hf.co/org/repo:Q4_K_M"}, "hf.co/org/repo:Q4_K_M", 4, []string{"completion"}},
		{"existing model is cached", api.PullRequest{Model: "llama3.2"}, "llama3.2:latest", 1, []string{"completion", "tools", "insert"}},
		{"existing model keeps its spelling", api.PullRequest{Model: "LLAMA3.2:LATEST"}, "llama3.2:latest", 1, []string{"completion", "tools", "insert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ollamasim.New(pullConfig())
			_, c := start(t, sim)
			var got []api.ProgressResponse
			err := c.Pull(t.Context(), &tt.req, func(p api.ProgressResponse) error {
				got = append(got, p)
				return nil
			})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			var statuses []string
			for _, p := range got {
				if !strings.HasPrefix(p.Status, "pulling ") || p.Status == "pulling manifest" {
					statuses = append(statuses, p.Status)
				}
			}
			if want := []string{"pulling manifest", "verifying sha256 digest", "writing manifest", "success"}; !slices.Equal(statuses, want) {
				t.Errorf("statuses without layers = %q, want %q", statuses, want)
			}
			layers := got[1 : len(got)-3]
			if len(layers) < 4 {
				t.Fatalf("got %d layer lines, want the weights and at least template, license and config", len(layers))
			}
			weights := layers[0]
			for i, p := range layers {
				if !layerDigest.MatchString(p.Digest) || p.Status != "pulling "+p.Digest[7:19] || p.Total <= 0 || p.Completed <= 0 || p.Completed > p.Total {
					t.Errorf("layer line %d = %+v, want pulling <digest[7:19]> with a sha256 digest, total and completed", i, p)
				}
			}
			var parts []int64
			for _, p := range layers {
				if p.Digest == weights.Digest {
					parts = append(parts, p.Completed)
				}
			}
			if len(parts) != tt.wantParts || !slices.IsSorted(parts) || parts[len(parts)-1] != weights.Total {
				t.Errorf("weights progress = %v of %d, want %d rising lines ending complete", parts, weights.Total, tt.wantParts)
			}

			tags := tagNames(t, c)
			m, ok := tags[tt.wantName]
			if !ok {
				t.Fatalf("tags = %v, want %s after the pull", slices.Collect(maps.Keys(tags)), tt.wantName)
			}
			if m.Size != weights.Total || len(m.Digest) != 64 || m.Details.Format != "gguf" {
				t.Errorf("pulled model = %+v, want the weights' size %d, a digest and details", m, weights.Total)
			}
			wantModels := len(fastConfig().Models)
			if tt.wantParts > 1 {
				wantModels++ // a new model
			}
			if len(tags) != wantModels {
				t.Errorf("tags has %d models after the pull, want %d", len(tags), wantModels)
			}
			list, _ := c.List(t.Context())
			if list.Models[0].Name != tt.wantName {
				t.Errorf("newest model = %s, want the pulled %s", list.Models[0].Name, tt.wantName)
			}
			show, err := c.Show(t.Context(), &api.ShowRequest{Model: tt.wantName})
			if err != nil {
				t.Fatalf("show: %v", err)
			}
			var caps []string
			for _, c := range show.Capabilities {
				caps = append(caps, string(c))
			}
			if !slices.Equal(caps, tt.wantCaps) {
				t.Errorf("capabilities = %v, want %v", caps, tt.wantCaps)
			}
			if got := sim.Stats(); got != (ollamasim.Stats{}) {
				t.Errorf("stats = %+v, want pulls not counted", got)
			}
		})
	}
}

func TestNamedModel(t *testing.T) {
	tests := []struct {
		name string
		want ollamasim.Model
	}{
		{"llama3.2", ollamasim.Model{Name: "llama3.2"}},
		{"qwen3:8b", ollamasim.Model{Name: "qwen3:8b", ParameterSize: "8B"}},
		{"qwen2.5:0.5b", ollamasim.Model{Name: "qwen2.5:0.5b", ParameterSize: "0.5B"}},
		{"gemma3:1b-it-qat", ollamasim.Model{Name: "gemma3:1b-it-qat"}},
		{"llama3.2:3", ollamasim.Model{Name: "llama3.2:3"}},
		{"user/Nomic-Embed-Text:137m", ollamasim.Model{Name: "user/Nomic-Embed-Text:137m", ParameterSize: "137M", Capabilities: []string{"embedding"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ollamasim.NamedModel(tt.name)
			if got.Name != tt.want.Name || got.ParameterSize != tt.want.ParameterSize || !slices.Equal(got.Capabilities, tt.want.Capabilities) {
				t.Errorf("NamedModel(%q) = %+v, want %+v", tt.name, got, tt.want)
			}
		})
	}
}

func TestPullWire(t *testing.T) {
	const missing = `{"error":"pull model manifest: file does not exist"}`
	tests := []struct {
		name            string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string // exact, or empty to check wantLines
		wantLines       []string
	}{
		{name: "empty body", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
		{name: "bad json", body: `{"model":`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"unexpected EOF"}`},
		{name: "no name", body: `{}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "invalid name", body: `{"model":"bad name!"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"invalid model name"}`},
		{name: "local and cloud", body: `{"model":"x:cloud:local"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"use either :local or :cloud, not both: \"x:cloud:local\""}`}, // as Ollama 0.32.15 answered
		{name: "stream false", body: `{"model":"gemma3","stream":false}`, wantStatus: 200, wantContentType: "application/json", wantBody: `{"status":"success"}`},
		{name: "stream false missing", body: `{"model":"missing-model","stream":false}`, wantStatus: 500, wantContentType: "application/json", wantBody: missing},
		{name: "missing fails mid-stream", body: `{"model":"user/Missing:7b"}`, wantStatus: 200, wantContentType: "application/x-ndjson",
			wantBody: `{"status":"pulling manifest"}` + "\n" + missing + "\n"},
		{name: "streams ndjson", body: `{"model":"gemma3"}`, wantStatus: 200, wantContentType: "application/x-ndjson",
			wantLines: []string{`{"status":"pulling manifest"}`, `{"status":"pulling `, `{"status":"verifying sha256 digest"}`, `{"status":"writing manifest"}`, `{"status":"success"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, c := start(t, ollamasim.New(pullConfig()))
			r := do(t, base, "POST", "/api/pull", tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType {
				t.Errorf("status %d, content type %q; want %d, %q", r.status, r.contentType, tt.wantStatus, tt.wantContentType)
			}
			if tt.wantBody != "" && r.body != tt.wantBody {
				t.Errorf("body = %q, want %q", r.body, tt.wantBody)
			}
			if tt.wantLines != nil {
				lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
				var kinds []string
				for _, l := range lines {
					if strings.HasPrefix(l, `{"status":"pulling `) && l != tt.wantLines[0] {
						l = `{"status":"pulling `
						if len(kinds) > 0 && kinds[len(kinds)-1] == l {
							continue
						}
					}
					kinds = append(kinds, l)
				}
				if !slices.Equal(kinds, tt.wantLines) {
					t.Errorf("lines = %q, want %q", lines, tt.wantLines)
				}
			}
			if tt.wantStatus != 200 || strings.Contains(tt.body, "issing") {
				if n := len(tagNames(t, c)); n != len(fastConfig().Models) {
					t.Errorf("a failed pull changed the inventory to %d models", n)
				}
			}
		})
	}

	t.Run("go client sees the mid-stream error", func(t *testing.T) {
		_, c := start(t, ollamasim.New(pullConfig()))
		var statuses []string
		err := c.Pull(t.Context(), &api.PullRequest{Model: "missing"}, func(p api.ProgressResponse) error {
			statuses = append(statuses, p.Status)
			return nil
		})
		if err == nil || err.Error() != "pull model manifest: file does not exist" || !slices.Equal(statuses, []string{"pulling manifest"}) {
			t.Errorf("err = %v after %q, want the manifest error after pulling manifest", err, statuses)
		}
		err = c.Pull(t.Context(), &api.PullRequest{Model: "bad name!"}, func(api.ProgressResponse) error { return nil })
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 400 || se.ErrorMessage != "invalid model name" {
			t.Errorf("invalid name: err = %#v, want StatusError 400 invalid model name", err)
		}
	})
}

func TestPullDuration(t *testing.T) {
	cfg := fastConfig()
	cfg.PullDuration = 80 * time.Millisecond
	_, c := start(t, ollamasim.New(cfg))

	t.Run("a pull takes PullDuration", func(t *testing.T) {
		begin := time.Now()
		if err := c.Pull(t.Context(), &api.PullRequest{Model: "gemma3"}, func(api.ProgressResponse) error { return nil }); err != nil {
			t.Fatalf("pull: %v", err)
		}
		if d := time.Since(begin); d < cfg.PullDuration {
			t.Errorf("pull took %v, want at least %v", d, cfg.PullDuration)
		}
	})

	t.Run("a canceled pull installs nothing", func(t *testing.T) {
		sim := ollamasim.New(cfg)
		ts := httptest.NewServer(sim)
		defer ts.Close()
		u, err := url.Parse(ts.URL)
		if err != nil {
			t.Fatalf("parse URL: %v", err)
		}
		errStop := errors.New("stop")
		err = api.NewClient(u, ts.Client()).Pull(t.Context(), &api.PullRequest{Model: "phi4"}, func(api.ProgressResponse) error {
			return errStop // the client closes the connection after the first line
		})
		if !errors.Is(err, errStop) {
			t.Errorf("err = %v, want the callback's error", err)
		}
		ts.Close() // waits for the pull handler to return
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, httptest.NewRequest("GET", "/api/tags", nil))
		if strings.Contains(rec.Body.String(), "phi4") {
			t.Errorf("tags = %s, want no phi4 after a canceled pull", rec.Body)
		}
	})
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name            string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string
		wantGone        string
	}{
		{name: "by model", body: `{"model":"llama3.2"}`, wantStatus: 200, wantGone: "llama3.2:latest"},
		{name: "by name, any case", body: `{"name":"QWEN3:8B"}`, wantStatus: 200, wantGone: "qwen3:8b"},
		{name: "unknown", body: `{"model":"nope"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model 'nope' not found"}`},
		{name: "invalid", body: `{"model":"bad name!"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"name \"bad name!\" is invalid"}`},
		{name: "no name", body: `{}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"model is required"}`}, // Ollama 0.32.15 answered so
		{name: "empty body", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ollamasim.New(fastConfig())
			base, c := start(t, sim)
			r := do(t, base, "DELETE", "/api/delete", tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType || r.body != tt.wantBody {
				t.Errorf("got %d %q %q, want %d %q %q", r.status, r.contentType, r.body, tt.wantStatus, tt.wantContentType, tt.wantBody)
			}
			tags := tagNames(t, c)
			if tt.wantGone != "" {
				if _, ok := tags[tt.wantGone]; ok || len(tags) != len(fastConfig().Models)-1 {
					t.Errorf("tags after delete = %v, want %s gone", tags, tt.wantGone)
				}
				ps, err := c.ListRunning(t.Context())
				if err != nil {
					t.Fatalf("ps: %v", err)
				}
				for _, m := range ps.Models {
					if m.Name == tt.wantGone {
						t.Errorf("deleted model still in /api/ps")
					}
				}
			} else if len(tags) != len(fastConfig().Models) {
				t.Errorf("a failed delete changed the inventory: %v", tags)
			}
		})
	}

	t.Run("go client", func(t *testing.T) {
		_, c := start(t, ollamasim.New(fastConfig()))
		if err := c.Delete(t.Context(), &api.DeleteRequest{Model: "llama3.2"}); err != nil {
			t.Fatalf("delete: %v", err)
		}
		err := c.Delete(t.Context(), &api.DeleteRequest{Model: "llama3.2"})
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 || se.ErrorMessage != "model 'llama3.2' not found" {
			t.Errorf("second delete: err = %#v, want StatusError 404", err)
		}
		_, err = c.Show(t.Context(), &api.ShowRequest{Model: "llama3.2"})
		if !errors.As(err, &se) || se.StatusCode != 404 {
			t.Errorf("show after delete: err = %v, want 404", err)
		}
	})
}

func TestCopy(t *testing.T) {
	tests := []struct {
		name            string
		body            string
		wantStatus      int
		wantContentType string
		wantBody        string
		wantCopy        string // the new name in /api/tags, copied from llama3.2:latest
	}{
		{name: "copy", body: `{"source":"llama3.2","destination":"backup"}`, wantStatus: 200, wantCopy: "backup:latest"},
		{name: "with namespace and tag", body: `{"source":"Llama3.2:latest","destination":"me/llama:v2"}`, wantStatus: 200, wantCopy: "me/llama:v2"},
		{name: "destination takes existing spelling", body: `{"source":"llama3.2","destination":"LLAMA3.2:v2"}`, wantStatus: 200, wantCopy: "llama3.2:v2"},
		{name: "onto an existing model", body: `{"source":"llama3.2","destination":"qwen3:8b"}`, wantStatus: 200, wantCopy: "qwen3:8b"},
		{name: "unknown source", body: `{"source":"nope","destination":"x"}`, wantStatus: 404, wantContentType: jsonUTF8, wantBody: `{"error":"model \"nope\" not found"}`},
		{name: "invalid source", body: `{"source":"","destination":"x"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"source \"\" is invalid"}`},
		{name: "invalid destination", body: `{"source":"llama3.2","destination":"a b"}`, wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"destination \"a b\" is invalid"}`},
		{name: "empty body", wantStatus: 400, wantContentType: jsonUTF8, wantBody: `{"error":"missing request body"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ollamasim.New(fastConfig())
			base, c := start(t, sim)
			before := tagNames(t, c)
			r := do(t, base, "POST", "/api/copy", tt.body)
			if r.status != tt.wantStatus || r.contentType != tt.wantContentType || r.body != tt.wantBody {
				t.Errorf("got %d %q %q, want %d %q %q", r.status, r.contentType, r.body, tt.wantStatus, tt.wantContentType, tt.wantBody)
			}
			after := tagNames(t, c)
			if tt.wantCopy == "" {
				if len(after) != len(before) {
					t.Errorf("a failed copy changed the inventory: %v", after)
				}
				return
			}
			src, dst := before["llama3.2:latest"], after[tt.wantCopy]
			if dst.Digest != src.Digest || dst.Size != src.Size || dst.Details.Family != src.Details.Family || !dst.ModifiedAt.After(src.ModifiedAt) {
				t.Errorf("copy = %+v, want the source's digest, size and details, and a newer time than %+v", dst, src)
			}
			if _, ok := after["llama3.2:latest"]; !ok {
				t.Errorf("copy removed the source")
			}
			show, err := c.Show(t.Context(), &api.ShowRequest{Model: tt.wantCopy})
			if err != nil || !slices.Contains(show.Capabilities, "tools") {
				t.Errorf("show copy = %v, %v; want the source's capabilities", show, err)
			}
		})
	}

	t.Run("go client", func(t *testing.T) {
		sim := ollamasim.New(fastConfig())
		_, c := start(t, sim)
		if err := c.Copy(t.Context(), &api.CopyRequest{Source: "llama3.2", Destination: "copy"}); err != nil {
			t.Fatalf("copy: %v", err)
		}
		err := c.Copy(t.Context(), &api.CopyRequest{Source: "nope", Destination: "copy"})
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 || se.ErrorMessage != `model "nope" not found` {
			t.Errorf("unknown source: err = %#v, want StatusError 404", err)
		}
		g := runChat(t, c, api.ChatRequest{Model: "copy", Messages: []api.Message{{Role: "user", Content: "hi"}}, Stream: ptr(false)})
		if !g.done {
			t.Errorf("chat on the copy did not finish")
		}
		if got := sim.Stats(); got.Requests != 1 {
			t.Errorf("stats = %+v, want only the chat counted", got)
		}
	})
}
