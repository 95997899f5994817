package dispatcher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Node commands: /api/show goes to one worker that has the model; /api/pull,
// /api/delete and /api/copy fan out to every worker chosen (all by default).
// None of them takes a slot or waits in the queue.

// targets returns the ready nodes that the request's ?nodes=a,b and
// ?label=key=value parameters choose (all ready nodes without them) and for
// which keep returns true.
func (s *Server) targets(r *http.Request, keep func(*fleet.Node) bool) []*fleet.Node {
	var ids []string
	if v := r.URL.Query().Get("nodes"); v != "" {
		ids = strings.Split(v, ",")
	}
	labelKey, labelValue, byLabel := strings.Cut(r.URL.Query().Get("label"), "=")
	var out []*fleet.Node
	for _, n := range s.view.Nodes() {
		switch {
		case n.State != fleet.StateReady:
		case ids != nil && !slices.Contains(ids, n.ID):
		case byLabel && n.Labels[labelKey] != labelValue:
		case keep != nil && !keep(n):
		default:
			out = append(out, n)
		}
	}
	return out
}

func (s *Server) handleShow(w http.ResponseWriter, r *http.Request) {
	body, req, ok := readRequest[api.ShowRequest](w, r, s.live().MaxBody)
	if !ok {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	if name == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	if !s.allowModel(w, r, native, name) || !s.rateLimit(w, r, native) {
		return
	}
	c, err := job.CanonicalModel(name)
	var nodes []*fleet.Node
	if err == nil {
		nodes = s.targets(r, func(n *fleet.Node) bool { return n.HasModel(c) })
	}
	if len(nodes) == 0 {
		status, msg := showNotFound(name, s.listedNames())
		writeError(w, status, msg)
		return
	}
	n := nodes[rand.IntN(len(nodes))]
	id := job.NewID()
	st, err := s.req.Command(n.ID, id, "/api/show", body)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer st.Close()
	s.relay(w, r, st, native, s.opts.CommandWait, nil)
}

// nodeReply is one reply of one node in a fan-out.
type nodeReply struct {
	node string
	rep  job.Reply
}

// fanout sends a node command to each node and merges their replies into one
// channel, which closes when every node has answered done or error (a node
// that never answers yields a 502 error after CommandWait).
func (s *Server) fanout(ctx context.Context, nodes []*fleet.Node, route string, body []byte) <-chan nodeReply {
	out := make(chan nodeReply)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			fail := func(status int, msg string) {
				select {
				case out <- nodeReply{n.ID, job.Reply{Kind: job.KindError, Status: status, Error: msg}}:
				case <-ctx.Done():
				}
			}
			st, err := s.req.Command(n.ID, job.NewID(), route, body)
			if err != nil {
				fail(http.StatusServiceUnavailable, err.Error())
				return
			}
			defer st.Close()
			started := false
			for {
				next, cancel := ctx, context.CancelFunc(func() {})
				if !started {
					next, cancel = context.WithTimeout(ctx, s.opts.CommandWait)
				}
				rep, err := st.Next(next)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						_ = st.Cancel() // The client left; best effort.
						return
					}
					fail(http.StatusBadGateway, "no answer: "+err.Error())
					return
				}
				started = started || rep.Kind == job.KindStart
				select {
				case out <- nodeReply{n.ID, rep}:
				case <-ctx.Done():
					_ = st.Cancel() // The client left; best effort.
					return
				}
				if rep.Kind == job.KindDone || rep.Kind == job.KindError {
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(out) }()
	return out
}

// fanoutAll sends a delete or copy to every chosen worker, not only those
// whose record lists the model (a record can lag a pull or copy by a
// heartbeat), and answers as Ollama would: each worker's Ollama decides
// whether it has the model.
func (s *Server) fanoutAll(w http.ResponseWriter, r *http.Request, route string, body []byte) {
	nodes := s.targets(r, nil)
	if len(nodes) == 0 {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "no ready worker")
		return
	}
	writeFanoutResult(w, len(nodes), s.fanoutErrors(r.Context(), nodes, route, body))
}

// fanoutErrors runs a fan-out that answers with an empty body on success
// (delete, copy) and returns the failures by node, once the view holds the
// node records the workers wrote after the change.
func (s *Server) fanoutErrors(ctx context.Context, nodes []*fleet.Node, route string, body []byte) map[string]job.Reply {
	failed := map[string]job.Reply{}
	var done []job.Reply
	for nr := range s.fanout(ctx, nodes, route, body) {
		switch nr.rep.Kind {
		case job.KindError:
			failed[nr.node] = nr.rep
		case job.KindDone:
			done = append(done, nr.rep)
		}
	}
	s.awaitRecords(ctx, done...)
	return failed
}

// recordWait bounds how long a response waits for the view to hold a node
// record a worker named in its done reply: the worker wrote it before it
// replied, so the view has it within milliseconds unless NATS is in trouble.
const recordWait = time.Second

// awaitRecords waits until the fleet view holds the node records that done
// replies name (job.Reply.Record), so that a listing asked for after the
// response shows what the job or command changed.
func (s *Server) awaitRecords(ctx context.Context, done ...job.Reply) {
	for _, rep := range done {
		if rep.Record != 0 && rep.Worker != "" && !s.view.WaitRevision(ctx, rep.Worker, rep.Record, recordWait) && ctx.Err() == nil {
			s.log.Warn("node record not seen", "worker", rep.Worker, "revision", rep.Record, "waited", recordWait)
		}
	}
}

// writeFanoutResult answers a delete or copy: 200 with an empty body when
// every node succeeded or did not have the model (404) and at least one did,
// else the first failure's status and every message.
func writeFanoutResult(w http.ResponseWriter, total int, failed map[string]job.Reply) {
	notFound := 0
	for _, rep := range failed {
		if rep.Status == http.StatusNotFound {
			notFound++
		}
	}
	if notFound < total {
		for id, rep := range failed {
			if rep.Status == http.StatusNotFound {
				delete(failed, id) // That worker did not have it: nothing to do there.
			}
		}
	}
	if len(failed) == 0 {
		w.WriteHeader(http.StatusOK)
		return
	}
	ids := make([]string, 0, len(failed))
	for id := range failed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	msgs := make([]string, len(ids))
	for i, id := range ids {
		msgs[i] = id + ": " + failed[id].Error
	}
	status := cmp.Or(failed[ids[0]].Status, http.StatusInternalServerError)
	if len(failed) == 1 && total == 1 {
		writeError(w, status, failed[ids[0]].Error)
		return
	}
	writeError(w, status, fmt.Sprintf("failed on %d of %d workers: %s", len(failed), total, strings.Join(msgs, "; ")))
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	body, req, ok := readRequest[api.DeleteRequest](w, r, s.live().MaxBody)
	if !ok {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	if strings.TrimSpace(name) == "" {
		writeError(w, http.StatusBadRequest, "model is required") // As Ollama 0.32.
		return
	}
	if _, err := job.CanonicalModel(name); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q is invalid", name))
		return
	}
	if !s.allowModel(w, r, native, name) {
		return
	}
	s.fanoutAll(w, r, "/api/delete", body)
}

func (s *Server) handleCopy(w http.ResponseWriter, r *http.Request) {
	body, req, ok := readRequest[api.CopyRequest](w, r, s.live().MaxBody)
	if !ok {
		return
	}
	if _, err := job.CanonicalModel(req.Source); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("source %q is invalid", req.Source))
		return
	}
	if _, err := job.CanonicalModel(req.Destination); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("destination %q is invalid", req.Destination))
		return
	}
	// An admin key limited to some models copies among them only: a copy
	// out of them would hand their weights to keys of other names.
	if !s.allowModel(w, r, native, req.Source) || !s.allowModel(w, r, native, req.Destination) {
		return
	}
	s.fanoutAll(w, r, "/api/copy", body)
}

// handlePull pulls a model on every chosen worker and streams one merged
// progress, as Ollama's own: each status once, per-layer totals summed over
// the workers, and {"status":"success"} only when all succeeded.
func (s *Server) handlePull(w http.ResponseWriter, r *http.Request) {
	body, req, ok := readRequest[api.PullRequest](w, r, s.live().MaxBody)
	if !ok {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	if _, err := job.CanonicalModel(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	if !s.allowModel(w, r, native, name) {
		return
	}
	nodes := s.targets(r, nil)
	if len(nodes) == 0 {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "no ready worker to pull to")
		return
	}
	// Workers always stream, so their progress can be merged.
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	fields["stream"] = true
	workerBody, _ := json.Marshal(fields) // Re-encoding what was just decoded cannot fail.
	stream := req.Stream == nil || *req.Stream

	p := newPullProgress(len(nodes))
	emit := func(v any) {}
	if stream {
		flusher, _ := w.(http.Flusher)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		emit = func(v any) {
			b, _ := json.Marshal(v)         // Progress values always marshal.
			_, _ = w.Write(append(b, '\n')) // A failed write ends with the client's context.
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
	var done []job.Reply
	for nr := range s.fanout(r.Context(), nodes, "/api/pull", workerBody) {
		if nr.rep.Kind == job.KindDone {
			done = append(done, nr.rep)
		}
		for _, v := range p.add(nr) {
			emit(v)
		}
	}
	s.awaitRecords(r.Context(), done...) // Before "success": /api/tags then lists the model.
	if r.Context().Err() != nil {
		return
	}
	err := p.err()
	switch {
	case stream && err != nil:
		emit(map[string]string{"error": err.Error()})
	case stream:
		emit(api.ProgressResponse{Status: "success"})
	case err != nil:
		w.Header().Set("Content-Type", "application/json") // Ollama's waitForStream sets it bare.
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		writeJSON(w, http.StatusOK, api.ProgressResponse{Status: "success"})
	}
}

// pullProgress merges the progress lines of several workers' pulls.
type pullProgress struct {
	nodes  int
	seen   map[string]bool                // statuses already passed on
	layers map[string]map[string][2]int64 // digest -> node -> {total, completed}
	failed map[string]string              // node -> error
}

func newPullProgress(nodes int) *pullProgress {
	return &pullProgress{nodes: nodes, seen: map[string]bool{}, layers: map[string]map[string][2]int64{},
		failed: map[string]string{}}
}

// add takes one reply and returns the progress objects to pass on.
func (p *pullProgress) add(nr nodeReply) []any {
	switch nr.rep.Kind {
	case job.KindError:
		p.failed[nr.node] = nr.rep.Error
		return nil
	case job.KindData:
	default:
		return nil
	}
	// A worker sends one NDJSON line per data message (job.Frames), and a
	// pull that does not stream sends one JSON object.
	var pr struct {
		api.ProgressResponse
		Error string `json:"error"`
	}
	if err := json.Unmarshal(job.Payload(nr.rep.Data), &pr); err != nil {
		return nil
	}
	switch {
	case pr.Error != "":
		p.failed[nr.node] = pr.Error
	case pr.Digest != "":
		if p.layers[pr.Digest] == nil {
			p.layers[pr.Digest] = map[string][2]int64{}
		}
		p.layers[pr.Digest][nr.node] = [2]int64{pr.Total, pr.Completed}
		var total, completed int64
		for _, tc := range p.layers[pr.Digest] {
			total += tc[0]
			completed += tc[1]
		}
		return []any{api.ProgressResponse{Status: pr.Status, Digest: pr.Digest, Total: total, Completed: completed}}
	case pr.Status == "success":
	case !p.seen[pr.Status]:
		p.seen[pr.Status] = true
		return []any{api.ProgressResponse{Status: pr.Status}}
	}
	return nil
}

// err reports the failed workers, or nil when every pull succeeded.
func (p *pullProgress) err() error {
	if len(p.failed) == 0 {
		return nil
	}
	ids := make([]string, 0, len(p.failed))
	for id := range p.failed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if p.nodes == 1 {
		return errors.New(p.failed[ids[0]])
	}
	msgs := make([]string, len(ids))
	for i, id := range ids {
		msgs[i] = id + ": " + p.failed[id]
	}
	return fmt.Errorf("pull failed on %d of %d workers: %s", len(ids), p.nodes, strings.Join(msgs, "; "))
}
