package worker

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/ollama"
)

// command runs one node command (docs/protocol.md): an Ollama route that is
// not queued, such as /api/show or /api/pull, sent to this worker alone. It
// takes no slot and is answered like a job, but never retried.
func (w *Worker) command(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := &task{w: w, body: m.Data, id: m.Header.Get(job.HeaderJob), route: m.Header.Get(job.HeaderRoute),
		reply: m.Header.Get(job.HeaderReply), attempt: 1, cancel: cancel}
	if !job.ValidReply(t.reply) || !job.ValidToken(t.id) {
		w.log.Warn("dropping node command without a valid reply subject or ID", "route", t.route, "reply", t.reply)
		return
	}
	t.requester, _, _ = job.ParseReplySubject(t.reply) // ValidReply said it parses.
	rt, ok := job.LookupRoute(t.route)
	// A queued route is a node command only to unload a model: the
	// dispatcher sends that to every worker that has it loaded. Anything
	// else it runs must take a slot, in the queue.
	if !ok || !rt.Node && !ollama.Unloads(t.route, t.body) {
		t.answer(ctx, failed(http.StatusBadRequest, fmt.Sprintf("route %q is not a node command", t.route)))
		return
	}
	t.method = rt.Method
	t.answer(ctx, t.executeTracked(ctx))
}
