package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// transcriber adds what Ollama 0.20+ has and the simulator does not,
// /v1/audio/transcriptions, to the simulators of the workers whose version
// has it: it answers which worker's Ollama heard which model and how many
// bytes. hits counts the transcriptions that reached each Ollama, those
// that lack the route included; gate, if set, holds each answer until it
// is closed.
type transcriber struct {
	versions []string
	hits     []atomic.Int64
	gate     chan struct{}
}

func newTranscriber(versions ...string) *transcriber {
	return &transcriber{versions: versions, hits: make([]atomic.Int64, len(versions))}
}

func (tr *transcriber) wrap(i int, sim http.Handler) http.Handler {
	rt, _ := job.LookupRoute("/v1/audio/transcriptions")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != rt.Path {
			sim.ServeHTTP(w, r)
			return
		}
		tr.hits[i].Add(1)
		if !rt.In(tr.versions[i]) {
			sim.ServeHTTP(w, r) // As that Ollama's router: 404 (fleettest's Versions).
			return
		}
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		file, _, err := r.FormFile("file")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n, _ := io.Copy(io.Discard, file)
		if tr.gate != nil {
			<-tr.gate
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"text": fmt.Sprintf("w%d heard %d bytes for %s", i, n, r.FormValue("model"))})
	})
}

// transcribe posts a transcription form to the dispatcher and returns the
// status, the job ID and the body.
func transcribe(t *testing.T, base, model string, audio []byte) (int, string, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if err := mw.WriteField("model", model); err != nil {
		t.Fatal(err)
	}
	fw, err := mw.CreateFormFile("file", "a.wav")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(audio)
	_ = mw.Close()
	resp, err := http.Post(base+"/v1/audio/transcriptions", mw.FormDataContentType(), &b)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), string(body)
}

// recordsOf returns the audit records of each job ID.
func recordsOf(t *testing.T, f *fleettest.Fleet) map[string][]audit.Record {
	t.Helper()
	out := map[string][]audit.Record{}
	for _, r := range auditRecords(t, f.Queue.JetStream()) {
		if r.rec.Kind == job.AuditJob {
			out[r.rec.Job] = append(out[r.rec.Job], r.rec)
		}
	}
	return out
}

// TestMixedFleetLeavesNewRoutesToNewOllamas: in a fleet of an Ollama 0.17
// and an Ollama 0.32, every transcription (0.20's) is run by the 0.32 one,
// none reaches the 0.17 one, though the 0.17 worker takes some and hands
// them back; each job has one audit record. With NATS auth on, the workers
// read each other's records and ring doorbells on worker credentials.
func TestMixedFleetLeavesNewRoutesToNewOllamas(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) {
			tr := newTranscriber("0.17.4", "0.32.15")
			f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 2, Auth: m.Auth, Versions: tr.versions, Ollama: tr.wrap})
			const jobs = 8
			var wg sync.WaitGroup
			ids := make([]string, jobs)
			for i := range jobs {
				wg.Go(func() {
					status, id, body := transcribe(t, f.URL, "llama3.2", bytes.Repeat([]byte{byte(i)}, 100+i))
					ids[i] = id
					if want := fmt.Sprintf(`{"text":"w1 heard %d bytes for llama3.2"}`+"\n", 100+i); status != http.StatusOK || body != want {
						t.Errorf("transcription %d: %d %q, want 200 %q", i, status, body, want)
					}
				})
			}
			wg.Wait()
			if n := tr.hits[0].Load(); n != 0 {
				t.Errorf("%d transcriptions reached the 0.17 Ollama, want none", n)
			}
			if n := tr.hits[1].Load(); n != jobs {
				t.Errorf("%d transcriptions reached the 0.32 Ollama, want %d", n, jobs)
			}
			if passed := counter(t, f.WorkerMetricsURLs[0], "ollamamax_worker_jobs_passed_on_total"); passed == 0 {
				t.Error("the 0.17 worker handed no job back: the test did not exercise it")
			}
			waitSettled(t, f)
			records := recordsOf(t, f)
			for _, id := range ids {
				if rs := records[id]; len(rs) != 1 || rs[0].Outcome != audit.Done || rs[0].Worker != "w1" {
					t.Errorf("job %s: records %+v, want one, done by w1", id, rs)
				}
			}
		})
	}
}

// TestOldFleetAnswersNewRoutesAsItsOllama: when no live worker's Ollama has
// the route, the dispatcher answers what such an Ollama answers and queues
// nothing; a NATS-native job for it reaches a worker's Ollama, which says
// the same.
func TestOldFleetAnswersNewRoutesAsItsOllama(t *testing.T) {
	tr := newTranscriber("0.17.4")
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Versions: tr.versions, Ollama: tr.wrap})
	if status, _, body := transcribe(t, f.URL, "llama3.2", []byte("RIFF")); status != http.StatusNotFound || body != "404 page not found" {
		t.Errorf("transcription on a 0.17 fleet: %d %q, want 404 page not found", status, body)
	}
	if n := tr.hits[0].Load(); n != 0 {
		t.Errorf("the dispatcher queued it: %d reached Ollama", n)
	}
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.WriteField("model", "llama3.2")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	_, _ = fw.Write([]byte("RIFF"))
	_ = mw.Close()
	id := job.NewID()
	sub := rawJob{id: id, subject: job.JobSubject("llama3.2:latest", job.Interactive, "native"), reply: job.ReplySubject("native", id),
		route: "/v1/audio/transcriptions", body: b.String(), header: map[string]string{job.HeaderBodyType: mw.FormDataContentType()}}.publish(t, f)
	if rep := end(t, sub); rep.Kind != job.KindError || rep.Status != http.StatusNotFound || string(rep.Data) != "404 page not found" {
		t.Errorf("NATS-native transcription on a 0.17 fleet: %+v %q, want its Ollama's 404", rep, rep.Data)
	}
	if n := tr.hits[0].Load(); n != 1 {
		t.Errorf("%d NATS-native jobs reached the Ollama, want 1", n)
	}
}

// TestPassedOnJobFailsOnItsLastDelivery: while the one worker whose Ollama
// has the route is busy, the other hands the job back until its last
// delivery, and then fails it with 503 (JetStream would give it up, not
// redeliver it), with one audit record.
func TestPassedOnJobFailsOnItsLastDelivery(t *testing.T) {
	tr := newTranscriber("0.17.4", "0.32.15")
	tr.gate = make(chan struct{})
	f := fleettest.Start(t, fleettest.Options{Workers: 2, Slots: 1, Versions: tr.versions, Ollama: tr.wrap})
	busy := make(chan string, 1)
	go func() {
		status, _, body := transcribe(t, f.URL, "llama3.2", []byte("first"))
		busy <- fmt.Sprint(status, " ", body)
	}()
	f.WaitFor("the 0.32 worker to be busy", func() bool { return tr.hits[1].Load() == 1 })
	status, id, body := transcribe(t, f.URL, "llama3.2", []byte("second"))
	close(tr.gate)
	want := fmt.Sprintf("no worker whose Ollama has /v1/audio/transcriptions took the job in %d deliveries", f.Queue.MaxDeliver())
	if status != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Errorf("second transcription: %d %s, want 503 %q", status, body, want)
	}
	if got := <-busy; got != "200 "+`{"text":"w1 heard 5 bytes for llama3.2"}`+"\n" {
		t.Errorf("first transcription: %s", got)
	}
	if n := tr.hits[0].Load(); n != 0 {
		t.Errorf("%d transcriptions reached the 0.17 Ollama, want none", n)
	}
	waitSettled(t, f)
	if rs := recordsOf(t, f)[id]; len(rs) != 1 || rs[0].Outcome != audit.Failed || rs[0].Status != 503 || rs[0].Worker != "w0" ||
		rs[0].Attempts != f.Queue.MaxDeliver() {
		t.Errorf("records of the second job: %+v, want one: failed 503 by w0 on delivery %d", rs, f.Queue.MaxDeliver())
	}
}

// counter sums a counter's series on a worker's /metrics.
func counter(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			var v float64
			if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// TestFormJobsNameTheirModelOnce: a transcription job's form must name the
// model of the subject it was queued on, once, and say it is a form; a
// JSON job's model is checked whatever its headers claim. Otherwise the
// job is refused, unrun: a client allowed one model must not run another.
func TestFormJobsNameTheirModelOnce(t *testing.T) {
	tr := newTranscriber("0.32.15")
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Versions: tr.versions, Ollama: tr.wrap})
	formOf := func(models ...string) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		for _, m := range models {
			_ = mw.WriteField("model", m)
		}
		fw, _ := mw.CreateFormFile("file", "a.wav")
		_, _ = fw.Write([]byte("RIFF"))
		_ = mw.Close()
		return b.String(), mw.FormDataContentType()
	}
	other, otherType := formOf("mistral")
	twice, twiceType := formOf("llama3.2", "mistral")
	good, goodType := formOf("llama3.2")
	for _, c := range []struct {
		name, route, body, bodyType string
		want                        string
	}{
		{"another model", "/v1/audio/transcriptions", other, otherType, `job for model "mistral" was published on the subject of model "llama3.2:latest"`},
		{"two models", "/v1/audio/transcriptions", twice, twiceType, "the request names its model more than once"},
		{"a form that does not say so", "/v1/audio/transcriptions", good, "", "failed to parse multipart form"},
		{"a JSON job claiming a form", "/api/chat", `{"model":"mistral","messages":[]}`, otherType, `job for model "mistral"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := job.NewID()
			sub := rawJob{id: id, subject: job.JobSubject("llama3.2:latest", job.Interactive, "native"), reply: job.ReplySubject("native", id),
				route: c.route, body: c.body, header: map[string]string{job.HeaderBodyType: c.bodyType}}.publish(t, f)
			if rep := end(t, sub); rep.Kind != job.KindError || rep.Status != http.StatusBadRequest || !strings.Contains(rep.Error, c.want) {
				t.Errorf("got %s %d %q, want 400 %q", rep.Kind, rep.Status, rep.Error, c.want)
			}
		})
	}
	if n := tr.hits[0].Load(); n != 0 {
		t.Errorf("%d refused transcriptions reached Ollama", n)
	}
	id := job.NewID()
	sub := rawJob{id: id, subject: job.JobSubject("llama3.2:latest", job.Interactive, "native"), reply: job.ReplySubject("native", id),
		route: "/v1/audio/transcriptions", body: good, header: map[string]string{job.HeaderBodyType: goodType}}.publish(t, f)
	var data []byte
	for {
		m, err := sub.NextMsgWithContext(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		rep, err := job.ParseReply(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Kind == job.KindError {
			t.Fatalf("a good form: %d %s", rep.Status, rep.Error)
		}
		if rep.Kind == job.KindDone {
			break
		}
		data = append(data, rep.Data...)
	}
	if want := `{"text":"w0 heard 4 bytes for llama3.2"}` + "\n"; string(data) != want {
		t.Errorf("a good form: %q, want %q", data, want)
	}
}
