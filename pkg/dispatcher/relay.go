package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

// handleJob returns the handler of an inference route: validate, queue, relay.
func (s *Server) handleJob(route string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r, s.opts.MaxBody)
		if !ok {
			return
		}
		var model string
		var err error
		switch route {
		case "/api/generate":
			var req api.GenerateRequest
			err = decode(body, &req)
			model = req.Model
		case "/api/chat":
			var req api.ChatRequest
			err = decode(body, &req)
			model = req.Model
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if model == "" {
			writeError(w, http.StatusBadRequest, "model is required")
			return
		}
		canonical, known, err := s.resolveModel(r, model)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "queue unavailable: "+err.Error())
			return
		}
		if !known {
			writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", model))
			return
		}
		j := queue.Job{ID: job.NewID(), Model: canonical, Class: job.Interactive, Route: route, Body: body, Wait: s.opts.QueueWait}
		w.Header().Set("X-Request-Id", j.ID)
		st, err := s.req.Submit(r.Context(), j)
		if err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				writeError(w, http.StatusRequestEntityTooLarge, "request body too large for the queue: "+err.Error())
				return
			}
			s.log.Warn("queue job", "job", j.ID, "model", canonical, "err", err)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "queue unavailable: "+err.Error())
			return
		}
		defer st.Close()
		s.log.Debug("job queued", "job", j.ID, "model", canonical, "route", route)
		s.relay(w, r, st)
	}
}

// relay writes the job's replies to the HTTP client as Ollama would have: the
// worker's status and content type, then Ollama's bytes as they arrive. It
// cancels the job when the client goes away.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, st *queue.Stream) {
	ctx := r.Context()
	wait, stopWaiting := context.WithTimeout(ctx, s.opts.QueueWait)
	defer stopWaiting()
	flusher, _ := w.(http.Flusher)
	var (
		started     bool
		wrote       bool
		attempt     int
		contentType string
	)
	for {
		next := wait
		if started {
			next = ctx
		}
		rep, err := st.Next(next)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				s.cancel(st, "client went away")
			case errors.Is(err, context.DeadlineExceeded) && !started:
				s.cancel(st, "queue wait over")
				w.Header().Set("Retry-After", strconv.Itoa(int(s.opts.QueueWait.Seconds())))
				writeError(w, http.StatusServiceUnavailable,
					fmt.Sprintf("no worker took the job within %s; it was removed from the queue", s.opts.QueueWait))
			default:
				s.failRelay(w, wrote, contentType, http.StatusServiceUnavailable, "reply stream ended: "+err.Error())
			}
			return
		}
		if rep.Attempt > attempt {
			if wrote {
				// Continuing a half-relayed stream on another worker is not supported yet:
				// say so rather than send the client a second, different text.
				s.cancel(st, "redelivered mid-stream")
				s.failRelay(w, wrote, contentType, http.StatusBadGateway, "the worker serving this request was lost mid-response")
				return
			}
			attempt = rep.Attempt
		}
		switch rep.Kind {
		case job.KindStart:
			if !started {
				started = true
				stopWaiting()
			}
		case job.KindData:
			if !wrote {
				contentType = rep.ContentType
				if contentType == "" {
					contentType = "application/json; charset=utf-8"
				}
				status := rep.Status
				if status == 0 {
					status = http.StatusOK
				}
				w.Header().Set("Content-Type", contentType)
				w.WriteHeader(status)
				wrote = true
			}
			if _, err := w.Write(rep.Data); err != nil {
				s.cancel(st, "client went away")
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		case job.KindDone:
			if !wrote {
				w.WriteHeader(http.StatusOK)
			}
			return
		case job.KindError:
			status := rep.Status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			s.failRelay(w, wrote, contentType, status, rep.Error)
			return
		}
	}
}

// failRelay reports an error the way Ollama does: a JSON error with its status
// before the first byte, or a final {"error"} line once streaming has begun.
func (s *Server) failRelay(w http.ResponseWriter, wrote bool, contentType string, status int, msg string) {
	if !wrote {
		writeError(w, status, msg)
		return
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	line := append(queue.ErrorBody(msg), '\n')
	if mt == "text/event-stream" {
		line = append(append([]byte("data: "), queue.ErrorBody(msg)...), '\n', '\n')
	}
	_, _ = w.Write(line) // A failed write means the client left; nothing more to tell it.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
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
