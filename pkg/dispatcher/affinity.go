package dispatcher

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"net/http"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/prometheus/client_golang/prometheus"
)

// Session affinity (docs/scheduling.md): the dispatcher remembers which
// worker served each session's last turn, and a request of the same
// session names that worker on its job (job.HeaderPrefer) when the node
// bucket shows it ready with the model loaded and a free slot; the workers do the
// rest (pkg/worker/affinity.go). A session is what the request names
// (sessionHeaders, then the body's prompt_cache_key, metadata.user_id or
// user) or, failing that, its conversation: a message list whose history
// (all but the last exchange) is the whole message list of a recent
// request. Keys are scoped by the API key's tenant and the model, and
// hashed, so that a client's strings are never stored and two tenants
// never share a session.

// sessionHeaders are the request headers that name a session, the first
// present winning: ours, then those coding agents send (Claude Code,
// OpenCode's two, Codex's current and earlier names), as Bifrost adopts
// them (maximhq/bifrost PR #6333).
var sessionHeaders = []string{
	"X-Session-Id",
	"X-Claude-Code-Session-Id",
	"X-Opencode-Session",
	"X-Session-Affinity",
	"Session-Id",
	"Session_id",
	"Thread-Id",
	"Conversation_id",
}

// sessionRoutes are the routes whose answers a prompt cache speeds up,
// and whether their bodies can name a session (user, prompt_cache_key,
// metadata.user_id) or hold a conversation: a native generate's cannot,
// so only its headers are read. Embeddings and transcriptions have no
// session worth a worker.
var sessionRoutes = map[string]bool{"/api/generate": false, "/api/chat": true, "/v1/chat/completions": true,
	"/v1/completions": true, "/v1/messages": true, "/v1/responses": true}

// affinitySize bounds the sessions remembered: about 150 bytes each, 2.5
// MB at most, far more sessions than a fleet has turns in flight within
// affinityTTL. The least recently used goes first.
const affinitySize = 16384

// affinityTTL is how long a turn is remembered: Ollama's default
// keep_alive (5m), after which an idle model, and its prompt cache, is
// unloaded, so that the worker has nothing left to offer.
const affinityTTL = 5 * time.Minute

// session is what a request tells of its session: the key under which the
// previous turn's worker is looked up ("" when it tells nothing), and
// those under which this turn's worker is remembered.
type session struct {
	lookup   string
	remember []string
}

// sessionOf derives the session of a request for model from its headers
// and, if inBody, its body, scoped by scope (the API key's tenant, ""
// without keys). It never fails: a body it cannot read tells nothing.
func sessionOf(h http.Header, scope, model string, body []byte, inBody bool) session {
	for _, name := range sessionHeaders {
		if id := h.Get(name); id != "" {
			return named(scope, model, "header", id)
		}
	}
	if !inBody {
		return session{}
	}
	var f struct {
		PromptCacheKey json.RawMessage `json:"prompt_cache_key"`
		Metadata       json.RawMessage `json:"metadata"`
		User           json.RawMessage `json:"user"`
		Messages       json.RawMessage `json:"messages"`
		Input          json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &f) != nil {
		return session{}
	}
	if id := jsonString(f.PromptCacheKey); id != "" {
		return named(scope, model, "prompt_cache_key", id)
	}
	var meta struct {
		UserID json.RawMessage `json:"user_id"`
	}
	if json.Unmarshal(f.Metadata, &meta) == nil {
		if id := jsonString(meta.UserID); id != "" {
			return named(scope, model, "metadata.user_id", id)
		}
	}
	if id := jsonString(f.User); id != "" {
		return named(scope, model, "user", id)
	}
	var msgs []json.RawMessage
	if json.Unmarshal(f.Messages, &msgs) != nil || len(msgs) == 0 {
		if json.Unmarshal(f.Input, &msgs) != nil { // /v1/responses: a string input is a first turn.
			return session{}
		}
	}
	if len(msgs) == 0 {
		return session{}
	}
	s := session{remember: []string{conversation(scope, model, msgs)}}
	if len(msgs) >= 3 {
		// The history without the last exchange (the previous answer and
		// the new message) is the whole of the previous turn's request.
		s.lookup = conversation(scope, model, msgs[:len(msgs)-2])
	}
	return s
}

// named is the session a request names with id.
func named(scope, model, kind, id string) session {
	h := keyHash(scope, model)
	field(h, []byte(kind))
	field(h, []byte(id))
	k := "s" + hex.EncodeToString(h.Sum(nil)[:16])
	return session{lookup: k, remember: []string{k}}
}

// conversation is the key of a message list.
func conversation(scope, model string, msgs []json.RawMessage) string {
	h := keyHash(scope, model)
	for _, m := range msgs {
		field(h, m)
	}
	return "p" + hex.EncodeToString(h.Sum(nil)[:16])
}

func keyHash(scope, model string) hash.Hash {
	h := sha256.New()
	field(h, []byte(scope))
	field(h, []byte(model))
	return h
}

// field writes b length-prefixed, so that no two lists hash alike.
func field(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// jsonString returns raw's value when it is a JSON string.
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// turn is what is remembered of a session's last turn: the worker that
// served it and the revision of that worker's node record when it ended.
type turn struct {
	key  string
	node string
	rev  uint64
	at   time.Time
}

// affinity is the bounded memory of sessions' last turns. It is safe for
// concurrent use.
type affinity struct {
	size     int
	ttl      time.Duration
	outcomes *prometheus.CounterVec // outcome: hit, busy, gone, cold, new

	mu    sync.Mutex
	order *list.List // of *turn, most recent first
	byKey map[string]*list.Element
}

func newAffinity(reg prometheus.Registerer, size int, ttl time.Duration) *affinity {
	a := &affinity{size: size, ttl: ttl, order: list.New(), byKey: make(map[string]*list.Element),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ollamamax_affinity_total",
			Help: "Requests of a known session or conversation, by what session affinity did: hit (the job names the worker of the previous turn), busy (that worker had no free slot), gone (it is not ready or not there), cold (its Ollama no longer has the model loaded), new (no previous turn remembered)."},
			[]string{"outcome"})}
	for _, o := range []string{"hit", "busy", "gone", "cold", "new"} {
		a.outcomes.WithLabelValues(o)
	}
	reg.MustRegister(a.outcomes)
	return a
}

// prefer returns the worker a job of session s for model should prefer
// ("" for any), judged by view, and the revision of its node record when
// the session's previous turn ended there (job.HeaderPreferRecord).
func (a *affinity) prefer(view *fleet.View, s session, model string) (string, uint64) {
	if s.lookup == "" || view == nil {
		return "", 0
	}
	t, ok := a.get(s.lookup)
	if !ok {
		a.outcomes.WithLabelValues("new").Inc()
		return "", 0
	}
	n, rev := view.Node(t.node)
	switch {
	case n == nil || n.State != fleet.StateReady:
		a.outcomes.WithLabelValues("gone").Inc()
		return "", 0
	case !n.IsLoaded(model):
		// Its Ollama unloaded the model, and the prompt cache with it.
		a.outcomes.WithLabelValues("cold").Inc()
		return "", 0
	case n.SlotsBusy >= max(n.SlotsTotal, 1) && rev != t.rev:
		// A record unchanged since the previous turn ended may still
		// count that turn's slot, which is free now.
		a.outcomes.WithLabelValues("busy").Inc()
		return "", 0
	}
	a.outcomes.WithLabelValues("hit").Inc()
	return t.node, t.rev
}

// served remembers that node served a turn of session s, which just
// ended, when node's record was at revision rev.
func (a *affinity) served(s session, node string, rev uint64) {
	if node == "" || len(s.remember) == 0 {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range s.remember {
		if e, ok := a.byKey[k]; ok {
			t := e.Value.(*turn)
			t.node, t.rev, t.at = node, rev, now
			a.order.MoveToFront(e)
			continue
		}
		a.byKey[k] = a.order.PushFront(&turn{key: k, node: node, rev: rev, at: now})
	}
	for a.order.Len() > a.size {
		a.removeLocked(a.order.Back())
	}
	for e := a.order.Back(); e != nil && now.Sub(e.Value.(*turn).at) > a.ttl; e = a.order.Back() {
		a.removeLocked(e)
	}
}

// get returns the turn remembered under key, if it is not older than ttl.
func (a *affinity) get(key string) (turn, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.byKey[key]
	if !ok {
		return turn{}, false
	}
	t := e.Value.(*turn)
	if time.Since(t.at) > a.ttl {
		a.removeLocked(e)
		return turn{}, false
	}
	return *t, true
}

// len returns how many turns are remembered.
func (a *affinity) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.order.Len()
}

func (a *affinity) removeLocked(e *list.Element) {
	delete(a.byKey, e.Value.(*turn).key)
	a.order.Remove(e)
}
