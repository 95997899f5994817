package dispatcher

import (
	"net/http"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/queue"
)

// Queue position over HTTP (docs/api.md, "Queue position"). A client that
// wants to ask where its request stands while it waits names the request
// itself, in HeaderRequestID: the response's X-Request-Id (the job ID) is
// only known once the answer starts. That name is a lookup key and nothing
// more: it is never the job ID, which is JetStream's Nats-Msg-Id, so a
// chosen one cannot make the stream drop another's job as a duplicate. It
// is scoped to the request's API key: another key asking for it gets 404.

// HeaderRequestID is the request header that names a queued request for
// PositionPath.
const HeaderRequestID = "Ollamaq-Request-Id"

// PositionPath is the route that answers where a named request waits.
const PositionPath = "/ollamamax/queue/{id}"

// maxRequestID bounds a request ID's length.
const maxRequestID = 64

// maxNamed bounds the named requests a dispatcher remembers while they
// wait; a request beyond it is served all the same, and its lookup is 404.
const maxNamed = 1 << 16

// validRequestID tells whether id is 1 to maxRequestID letters, digits,
// '.', '_', ':' or '-': safe in a path, a log line and a JSON string.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// namedKey is a named request's lookup key: the API key's ID ("" without
// keys) and the client's request ID.
type namedKey struct{ key, id string }

// namedRequests holds the streams of the queued requests that named themselves,
// while their handlers run.
type namedRequests struct {
	mu sync.Mutex
	m  map[namedKey]*queue.Stream
}

// add remembers st under k, in place of an earlier request of the same
// name (a client retrying); false when the bound is reached.
func (n *namedRequests) add(k namedKey, st *queue.Stream) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[namedKey]*queue.Stream{}
	}
	if _, ok := n.m[k]; !ok && len(n.m) >= maxNamed {
		return false
	}
	n.m[k] = st
	return true
}

// remove forgets k if it still names st.
func (n *namedRequests) remove(k namedKey, st *queue.Stream) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m[k] == st {
		delete(n.m, k)
	}
}

func (n *namedRequests) get(k namedKey) *queue.Stream {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[k]
}

// requestName reads the request's HeaderRequestID; ok is false, and the
// client told so with 400, when it is malformed.
func requestName(w http.ResponseWriter, r *http.Request, f format) (id string, ok bool) {
	vs := r.Header.Values(HeaderRequestID)
	if len(vs) == 0 || len(vs) == 1 && vs[0] == "" {
		return "", true
	}
	if len(vs) > 1 || !validRequestID(vs[0]) {
		f.fail(w, http.StatusBadRequest, HeaderRequestID+" must be one value of 1 to 64 letters, digits, '.', '_', ':' or '-'")
		return "", false
	}
	return vs[0], true
}

// nameOf is the lookup key of request id of r's API key.
func nameOf(r *http.Request, id string) namedKey {
	k, _ := requestKey(r)
	return namedKey{key: k.ID, id: id}
}

// positionReply is what PositionPath answers.
type positionReply struct {
	RequestID string `json:"request_id"`
	// Position is the request's place in its model's queue, from 1; absent
	// before the first report (within one to three seconds of queueing).
	Position int `json:"position,omitempty"`
	// ETAMillis is the expected wait still, absent until the queue's rate
	// was measured.
	ETAMillis int64 `json:"eta_ms,omitempty"`
	// Reported is when the position was reported.
	Reported *time.Time `json:"reported_at,omitempty"`
}

// handlePosition answers where a named request of the caller's key waits:
// 404 when no such request waits here (it started, ended, never was, or is
// another key's).
func (s *Server) handlePosition(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validRequestID(id) {
		writeError(w, http.StatusBadRequest, "a request ID is 1 to 64 letters, digits, '.', '_', ':' or '-'")
		return
	}
	st := s.named.get(nameOf(r, id))
	var p queue.Position
	waiting := false
	if st != nil {
		p, waiting = st.Queued()
	}
	if !waiting {
		writeError(w, http.StatusNotFound, "no request "+id+" waits in the queue here: it started, ended, or was never queued through this dispatcher with this key")
		return
	}
	out := positionReply{RequestID: id, Position: p.Position}
	if p.Position > 0 {
		at := p.At.UTC()
		out.Reported = &at
		if p.ETA > 0 {
			out.ETAMillis = max(p.ETA.Milliseconds(), 1)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
