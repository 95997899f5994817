package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// handleJob returns the handler of an inference route: validate, check the
// key, queue, relay.
func (s *Server) handleJob(route string, f format) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		arrived := time.Now()
		name, ok := requestName(w, r, f)
		if !ok {
			return
		}
		lv := s.live() // The limits this request lives by, whatever a reload does meanwhile.
		hold, ok := s.waitTurn(w, r, f)
		if !ok {
			return
		}
		defer hold.release()
		body, ok := readBody(w, r, lv.MaxBody, f)
		if !ok {
			return
		}
		hold.shrink(int64(len(body)))
		if strings.HasPrefix(route, "/v1/") && r.Header.Get("Content-Encoding") == "zstd" {
			if body, ok = decompress(w, f, body, lv.MaxBody); !ok {
				return
			}
		}
		var model, bodyType string
		if route == transcriptions {
			model, bodyType, ok = validateForm(w, r, body)
		} else {
			model, ok = validate(w, route, body)
		}
		if !ok || !s.allowModel(w, r, f, model) {
			return
		}
		canonical, ok := s.resolveJob(w, r, route, f, model)
		if !ok || s.unload(w, r, route, f, canonical, body) {
			return
		}
		class, ok := s.lane(w, r, f)
		if !ok || !s.rateLimit(w, r, f) {
			return
		}
		done, held, ok := s.fairTurn(w, r, f, canonical, lv)
		if !ok {
			return
		}
		defer done()
		if !s.admit(w, r, f, canonical, class) {
			return
		}
		wait := max(lv.QueueWait-held, time.Second) // Held time counts against the queue wait.
		key, hasKey := requestKey(r)
		qj := &queuedJob{Job: queue.Job{ID: job.NewID(), Model: canonical, Class: class, Route: route, Body: body, BodyType: bodyType,
			Wait: wait}, arrived: arrived, hold: hold}
		if hasKey {
			qj.key, qj.hasKey = key, true
			qj.Key, qj.Tenant = key.ID, key.Tenant
			qj.MAC = audit.Sign(s.opts.MACSecret, qj.ID, s.req.ID(), key.ID, key.Tenant)
		}
		scope := "" // Without keys every client is one tenant.
		if hasKey {
			scope = key.Tenant
		}
		if inBody, ok := sessionRoutes[route]; ok {
			qj.session = sessionOf(r.Header, scope, canonical, body, inBody)
			qj.Prefer, qj.PreferRecord = s.affinity.prefer(s.view, qj.session, canonical)
		}
		w.Header().Set("X-Request-Id", qj.ID)
		s.traceJob(r, qj)
		st, err := s.req.Submit(r.Context(), qj.Job)
		if err != nil {
			qj.trace.fail("queue the job: " + err.Error())
			if errors.Is(err, nats.ErrMaxPayload) {
				f.fail(w, http.StatusRequestEntityTooLarge, "request body too large for the queue: "+err.Error())
				return
			}
			s.log.Warn("queue job", "job", qj.ID, "model", canonical, "err", err)
			w.Header().Set("Retry-After", "1")
			f.failForwarded(w, http.StatusServiceUnavailable, "queue unavailable: "+err.Error())
			return
		}
		defer st.Close()
		if name != "" && s.named.add(nameOf(r, name), st) {
			defer s.named.remove(nameOf(r, name), st)
		}
		qj.Body = nil // JetStream has it; the hold stands for it until a worker starts the job.
		s.metrics.submitted.WithLabelValues(canonical, string(qj.Class)).Inc()
		if hasKey {
			s.metrics.tenantJobs.WithLabelValues(s.tenants.label(key.Tenant)).Inc()
		}
		s.queued(canonical, class)
		s.log.Debug("job queued", "job", qj.ID, "model", canonical, "route", route)
		s.relay(w, r, st, f, wait, qj)
	}
}

// unfinished charges the token budget of a job that ended without Ollama's
// token counts (the client left, the worker broke off or went silent, or
// Ollama reported none): one token per streamed frame, which is what Ollama
// streams, so hanging up early does not escape the limit.
func (s *Server) unfinished(qj *queuedJob, frames int) {
	if qj.hasKey && s.limits != nil {
		s.limits.spend(qj.key, frames)
	}
}

// rateLimit takes a request from the budget of the request's key, or
// refuses it with 429 and Retry-After.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request, f format) bool {
	key, ok := requestKey(r)
	if !ok || s.limits == nil {
		return true
	}
	lim := s.limits.admit(key, time.Now())
	if lim == nil {
		return true
	}
	s.metrics.refused.WithLabelValues("rate_limited").Inc()
	w.Header().Set("Retry-After", strconv.Itoa(lim.retryAfter()))
	f.refuse(w, http.StatusTooManyRequests, lim.Error())
	return false
}

// queuedJob is what relay knows of the job behind a stream.
type queuedJob struct {
	queue.Job
	arrived time.Time // when the request came, for the time-to-first-token metric
	key     apikey.Key
	hasKey  bool
	hold    *bodyHold // the body's bytes of the body budget, given back when a worker starts the job
	trace   *jobTrace // nil when not traced
	// session is the request's session (affinity.go), servedBy the worker
	// that started the job.
	session  session
	servedBy string
}

// finished accounts for the tokens a job used: the tenant's metrics and its
// key's token budget.
func (s *Server) finished(qj *queuedJob, u *job.Usage) {
	if u == nil || !qj.hasKey {
		return
	}
	tenant := s.tenants.label(qj.key.Tenant)
	s.metrics.tenantTokens.WithLabelValues(tenant, "prompt").Add(float64(u.PromptTokens))
	s.metrics.tenantTokens.WithLabelValues(tenant, "completion").Add(float64(u.CompletionTokens))
	if s.limits != nil {
		s.limits.spend(qj.key, u.PromptTokens+u.CompletionTokens)
	}
}

// relay writes a job's (or node command's) replies to the HTTP client as
// Ollama would have: the worker's status and content type, then Ollama's
// bytes as they arrive. wait bounds the time until a worker starts it. A
// queued job (qj) is dropped from the queue after wait; qj is nil for a
// node command. It cancels the job when the client goes away.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, st *queue.Stream, f format, wait time.Duration, qj *queuedJob) {
	queued, jt := qj != nil, qj.tr()
	flusher, _ := w.(http.Flusher)
	var (
		wrote       bool
		attempt     int
		contentType string
		first, last []byte // the first and last frames, to tell an SSE stream that ended early and how to end it
		frames      int    // data messages written to the client
		counted     bool   // the done reply carried Ollama's token counts
	)
	if queued {
		defer func() {
			if !counted && frames > 0 {
				s.unfinished(qj, frames)
			}
		}()
	}
	silence := s.live().MaxSilence // One bound for the whole answer, whatever a reload does meanwhile.
	err := st.Follow(r.Context(), wait, silence, func(rep job.Reply) bool {
		if queued && rep.Kind == job.KindStart {
			qj.hold.release() // The body is with a worker now.
			jt.started(rep)
			qj.servedBy = rep.Worker
		}
		if rep.Attempt > attempt {
			// A redelivery. Once the client has bytes, only a worker that
			// continues exactly where they end may go on (it asked this
			// requester, see job.Progress); never send a second text.
			if wrote && (rep.Kind != job.KindStart || rep.Resumed != frames) {
				s.cancel(st, "redelivered mid-stream")
				msg := rep.Error
				if rep.Kind != job.KindError {
					msg = "the worker serving this request was lost mid-response"
				}
				jt.fail(msg)
				f.failMidStream(w, contentType, msg, first, last)
				return false
			}
			if wrote {
				s.metrics.resumed.Inc()
				s.log.Info("response continued by another worker", "job", st.ID(), "attempt", rep.Attempt, "frames", frames)
			}
			attempt = rep.Attempt
		}
		switch rep.Kind {
		case job.KindData:
			if !wrote {
				contentType = cmp.Or(rep.ContentType, "application/json; charset=utf-8")
				w.Header().Set("Content-Type", contentType)
				if (f == anthropicAPI || f == responses) && isSSE(contentType) {
					// As Ollama's Anthropic and Responses middleware send a stream.
					w.Header().Set("Cache-Control", "no-cache")
					if r.ProtoMajor == 1 {
						w.Header().Set("Connection", "keep-alive") // HTTP/2 has no such header.
					}
				}
				w.WriteHeader(cmp.Or(rep.Status, http.StatusOK))
				wrote = true
				if queued {
					s.metrics.firstByte.WithLabelValues(r.Pattern).Observe(time.Since(qj.arrived).Seconds())
					jt.firstByte()
				}
			}
			if _, err := w.Write(rep.Data); err != nil {
				s.abandon(r, st, qj, attempt > 0, "client went away")
				return false
			}
			if flusher != nil {
				flusher.Flush()
			}
			if first == nil {
				first = rep.Data
			}
			last = rep.Data
			frames++
		case job.KindDone:
			s.awaitRecords(r.Context(), rep) // A job that loaded or unloaded its model: /api/ps shows it after the answer.
			if queued {
				counted = rep.Usage != nil
				s.finished(qj, rep.Usage)
				s.servedTurn(qj)
			}
			if !wrote {
				w.WriteHeader(http.StatusOK)
			} else if isSSE(contentType) && !f.complete(last) {
				// Ollama ends a stream that failed without its final event
				// and without saying why; tell the client it broke off.
				jt.fail("the response ended before it was complete")
				f.failMidStream(w, contentType, "the response ended before it was complete", first, last)
			}
			return false
		case job.KindError:
			jt.fail(rep.Error)
			if queue.IsLocal(rep) {
				s.abandon(r, st, qj, attempt > 0, rep.Error) // The worker may still be at it.
			}
			switch {
			case wrote:
				f.failMidStream(w, contentType, rep.Error, first, last)
			case rep.ContentType != "" && len(rep.Data) > 0:
				// Ollama's own error response, in the shape of the route it came from.
				w.Header().Set("Content-Type", rep.ContentType)
				w.WriteHeader(cmp.Or(rep.Status, http.StatusInternalServerError))
				_, _ = w.Write(rep.Data) // A failed write means the client left.
			default:
				f.failForwarded(w, cmp.Or(rep.Status, http.StatusInternalServerError), rep.Error)
			}
			return false
		}
		return true
	})
	jt.end(err, r.Context().Err() != nil)
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		s.abandon(r, st, qj, attempt > 0, "client went away")
	case errors.Is(err, queue.ErrNotStarted) && queued:
		s.abandon(r, st, qj, attempt > 0, "queue wait over")
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())))
		f.failForwarded(w, http.StatusServiceUnavailable,
			fmt.Sprintf("no worker took the job within %s; it was removed from the queue", wait))
	case errors.Is(err, queue.ErrNotStarted):
		f.failForwarded(w, http.StatusBadGateway, fmt.Sprintf("the worker did not answer within %s", wait))
	case errors.Is(err, queue.ErrSilent):
		s.abandon(r, st, qj, attempt > 0, "worker silent")
		msg := fmt.Sprintf("the worker went silent: nothing for %s", silence)
		if wrote {
			f.failMidStream(w, contentType, msg, first, last)
		} else {
			f.failForwarded(w, http.StatusGatewayTimeout, msg)
		}
	case wrote:
		f.failMidStream(w, contentType, "reply stream ended: "+err.Error(), first, last)
	default:
		f.failForwarded(w, http.StatusServiceUnavailable, "reply stream ended: "+err.Error())
	}
}

// cancel tells the worker, if any, to stop the job.
func (s *Server) cancel(st *queue.Stream, why string) {
	if err := st.Cancel(); err != nil {
		s.log.Warn("cancel job", "job", st.ID(), "why", why, "err", err)
		return
	}
	s.log.Debug("job canceled", "job", st.ID(), "why", why)
}

// abandon stops the job where it runs and removes it from the queue: nobody
// is left to read its answer. A queued job (qj) that no worker started and
// that was still in the queue gets its audit record here, since no worker
// will write one.
func (s *Server) abandon(r *http.Request, st *queue.Stream, qj *queuedJob, started bool, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
	defer cancel()
	withdrawn, err := st.Abandon(ctx)
	if err != nil {
		s.log.Warn("abandon job", "job", st.ID(), "why", why, "err", err)
		return
	}
	s.log.Debug("job abandoned", "job", st.ID(), "why", why, "withdrawn", withdrawn && !started)
	if qj != nil && withdrawn && !started {
		s.audit(ctx, s.jobRecord(qj, audit.Withdrawn, why))
	}
}

// servedTurn remembers the worker that served qj's session's turn.
func (s *Server) servedTurn(qj *queuedJob) {
	if qj.servedBy == "" || len(qj.session.remember) == 0 || s.view == nil {
		return
	}
	_, rev := s.view.Node(qj.servedBy)
	s.affinity.served(qj.session, qj.servedBy, rev)
}
