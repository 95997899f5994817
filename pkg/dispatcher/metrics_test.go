package dispatcher_test

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches a /metrics page and parses it.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return families
}

// sum adds the values of a family's series whose labels include want.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var total float64
	f := families[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func TestMetricsCountWhatHappened(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 2})
	c := client(t, f.URL)
	const ok, tokens = 5, 7
	var evalCount int
	for range ok {
		stream := false
		err := c.Generate(context.Background(), &api.GenerateRequest{Model: "llama3.2", Prompt: "count", Stream: &stream,
			Options: map[string]any{"num_predict": tokens}}, func(r api.GenerateResponse) error {
			evalCount += r.EvalCount
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, sim := range f.Sims {
		sim.SetFailure(ollamasim.Failure{Status: 400, Message: "bad request"})
	}
	for range 2 {
		if status, _, _ := post(t, f.URL+"/api/generate", `{"model":"llama3.2","prompt":"x"}`); status != 400 {
			t.Fatalf("status %d, want the injected 400", status)
		}
	}
	if status, _, _ := post(t, f.URL+"/api/generate", `{"model":"nope","prompt":"x"}`); status != 404 {
		t.Fatalf("status %d, want 404", status)
	}

	// The client has its 400 before the worker has settled the job with
	// JetStream: wait until the queue gauge says it is gone.
	var d map[string]*dto.MetricFamily
	f.WaitFor("the failed jobs to be settled", func() bool {
		d = scrape(t, f.URL+"/metrics")
		return sum(d, "ollamamax_queue_jobs", map[string]string{"model": "llama3.2:latest"}) == 0
	})
	jobLabels := map[string]string{"model": "llama3.2:latest", "class": "interactive"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ollamamax_jobs_submitted_total", jobLabels, ok + 2},
		{"ollamamax_http_requests_total", map[string]string{"route": "POST /api/generate", "code": "200"}, ok},
		{"ollamamax_http_requests_total", map[string]string{"route": "POST /api/generate", "code": "400"}, 2},
		{"ollamamax_http_requests_total", map[string]string{"route": "POST /api/generate", "code": "404"}, 1},
		{"ollamamax_http_time_to_first_token_seconds", map[string]string{"route": "POST /api/generate"}, ok}, // Errors carry no token.
		{"ollamamax_queue_jobs", map[string]string{"model": "llama3.2:latest"}, 0},
		{"ollamamax_queue_up", nil, 1},
	} {
		if got := sum(d, c.name, c.labels); got != c.want {
			t.Errorf("dispatcher %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(d["ollamamax_queue_oldest_job_age_seconds"].GetMetric()); n != 3 {
		t.Errorf("oldest-age series for %d consumers, want 3 (interactive, async and batch)", n)
	}

	w := map[string]float64{}
	for _, u := range f.WorkerMetricsURLs {
		fam := scrape(t, u)
		for _, name := range []string{"ollamamax_worker_jobs_completed_total", "ollamamax_worker_jobs_failed_total",
			"ollamamax_worker_tokens_generated_total", "ollamamax_worker_job_queue_wait_seconds",
			"ollamamax_worker_job_duration_seconds", "ollamamax_worker_generation_tokens_per_second"} {
			w[name] += sum(fam, name, nil)
		}
		if got := sum(fam, "ollamamax_worker_slots", map[string]string{"state": "total"}); got != 2 {
			t.Errorf("%s: slots total %v, want 2", u, got)
		}
		if got := sum(fam, "ollamamax_worker_ollama_up", nil); got != 1 {
			t.Errorf("%s: ollama_up %v", u, got)
		}
	}
	for name, want := range map[string]float64{
		"ollamamax_worker_jobs_completed_total":         ok,
		"ollamamax_worker_jobs_failed_total":            2,
		"ollamamax_worker_tokens_generated_total":       float64(evalCount),
		"ollamamax_worker_job_queue_wait_seconds":       ok + 2,
		"ollamamax_worker_job_duration_seconds":         ok + 2,
		"ollamamax_worker_generation_tokens_per_second": ok,
	} {
		if w[name] != want {
			t.Errorf("workers' %s = %v, want %v", name, w[name], want)
		}
	}
	if evalCount != ok*tokens {
		t.Errorf("clients saw %d tokens, want %d", evalCount, ok*tokens)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(f.URL + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %v %v", path, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
}

// TestDashboardUsesRealMetrics keeps deploy/grafana/ollamamax.json honest:
// every ollamamax_ metric it queries is one the dispatcher or a worker serves.
func TestDashboardUsesRealMetrics(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1})
	generateText(t, client(t, f.URL), &api.GenerateRequest{Model: "llama3.2", Prompt: "hi"})
	served := map[string]bool{}
	for _, u := range append([]string{f.URL + "/metrics"}, f.WorkerMetricsURLs...) {
		for name := range scrape(t, u) {
			served[name] = true
		}
	}
	dash, err := os.ReadFile("../../deploy/grafana/ollamamax.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`ollamamax_[a-z_]+`).FindAllString(string(dash), -1)
	if len(used) < 10 {
		t.Fatalf("the dashboard queries only %d metrics", len(used))
	}
	for _, name := range used {
		base := strings.TrimSuffix(name, "_bucket")
		if !served[base] {
			t.Errorf("the dashboard queries %s, which nothing serves", name)
		}
	}
}
