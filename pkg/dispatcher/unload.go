package dispatcher

import (
	"cmp"
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
)

// Unloading a model (ollama stop; a generate with an empty prompt or a chat
// without messages, and keep_alive 0) means the fleet's /api/ps no longer
// lists it. A queued job would unload it from the one worker that takes it,
// which need not be one that has it loaded, so the dispatcher sends the
// request, as a node command, to every ready worker that has the model
// loaded, and answers once each has and its record says so.

// unload answers an unload request for the canonical model by sending it
// to every ready worker with the model loaded. It returns false, having
// written nothing, for a request that unloads nothing or when no worker
// has the model loaded: the queue then takes it, and the Ollama that runs
// it answers, as for a model that is not loaded.
func (s *Server) unload(w http.ResponseWriter, r *http.Request, route string, f format, canonical string, body []byte) bool {
	if !ollama.Unloads(route, body) {
		return false
	}
	var nodes []*fleet.Node
	for _, n := range s.view.Nodes() {
		if n.State == fleet.StateReady && n.IsLoaded(canonical) {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return false
	}
	if !s.rateLimit(w, r, f) {
		return true
	}
	start := time.Now()
	id := job.NewID()
	w.Header().Set("X-Request-Id", id)
	type answer struct {
		status      int
		contentType string
		data        []byte
	}
	answers := map[string]*answer{}
	var failures, done []job.Reply
	for nr := range s.fanout(r.Context(), nodes, route, body) {
		a := answers[nr.node]
		if a == nil {
			a = &answer{}
			answers[nr.node] = a
		}
		switch nr.rep.Kind {
		case job.KindData:
			if a.status == 0 {
				a.status, a.contentType = cmp.Or(nr.rep.Status, http.StatusOK), nr.rep.ContentType
			}
			a.data = append(a.data, nr.rep.Data...)
		case job.KindDone:
			done = append(done, nr.rep)
		case job.KindError:
			failures = append(failures, nr.rep)
			delete(answers, nr.node)
		}
	}
	s.awaitRecords(r.Context(), done...)
	if r.Context().Err() != nil {
		return true
	}
	var by []string
	var first *answer
	for _, n := range nodes {
		if a := answers[n.ID]; a != nil && a.status != 0 {
			by = append(by, n.ID)
			if first == nil {
				first = a
			}
		}
	}
	rec := audit.Record{Time: time.Now().UTC(), Kind: job.AuditJob, Job: id, Requester: s.req.ID(), Route: route, Model: canonical,
		Class: string(job.Interactive), Worker: strings.Join(by, ","), Outcome: audit.Done, RunMS: time.Since(start).Milliseconds()}
	if k, ok := requestKey(r); ok {
		rec.Key, rec.Tenant = k.ID, k.Tenant
		rec.MAC = audit.Sign(s.opts.MACSecret, id, s.req.ID(), k.ID, k.Tenant)
	}
	switch {
	case first != nil:
		// Every worker's Ollama answers the same, but for its time.
		w.Header().Set("Content-Type", cmp.Or(first.contentType, "application/json; charset=utf-8"))
		w.WriteHeader(first.status)
		_, _ = w.Write(first.data) // A failed write means the client left.
	default:
		rep := failures[0]
		rec.Outcome, rec.Status, rec.Error = audit.Failed, cmp.Or(rep.Status, http.StatusInternalServerError), rep.Error
		if rep.ContentType != "" && len(rep.Data) > 0 {
			w.Header().Set("Content-Type", rep.ContentType)
			w.WriteHeader(rec.Status)
			_, _ = w.Write(rep.Data)
		} else {
			f.failForwarded(w, rec.Status, rep.Error)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	s.audit(ctx, rec)
	return true
}
