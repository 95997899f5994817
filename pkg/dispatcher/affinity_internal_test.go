package dispatcher

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// chatBody is a chat request with messages u1, a1, u2, ... up to n
// messages, alternating user and assistant.
func chatBody(n int) string {
	b := `{"model":"llama3.2","messages":[`
	for i := range n {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		if i > 0 {
			b += ","
		}
		b += fmt.Sprintf(`{"role":%q,"content":"message %d"}`, role, i)
	}
	return b + `]}`
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestSessionOf: each way a request names its session gives it a key that
// a later request naming the same session looks up; the named ways come
// first in their order; a conversation's next turn looks up what its
// previous turn remembered; keys differ across tenants and models; a body
// that tells nothing gives no key.
func TestSessionOf(t *testing.T) {
	named := func(h http.Header, body string) session { return sessionOf(h, "t1", "llama3.2", []byte(body), true) }
	for _, name := range sessionHeaders {
		t.Run(name, func(t *testing.T) {
			a, b := named(header(name, "abc"), chatBody(1)), named(header(name, "abc"), chatBody(5))
			if a.lookup == "" || a.lookup != b.lookup || len(a.remember) != 1 || a.remember[0] != a.lookup {
				t.Errorf("two requests naming session abc: %+v and %+v, want the same key, looked up and remembered", a, b)
			}
			if c := named(header(name, "abd"), chatBody(1)); c.lookup == a.lookup {
				t.Errorf("sessions abc and abd share key %s", a.lookup)
			}
		})
	}
	for _, c := range []struct{ name, body string }{
		{"prompt_cache_key", `{"model":"m","prompt_cache_key":"abc","user":"u1","input":"hi"}`},
		{"metadata.user_id", `{"model":"m","metadata":{"user_id":"user_x_session_abc"},"messages":[{"role":"user","content":"hi"}]}`},
		{"user", `{"model":"m","user":"alice","messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := named(http.Header{}, c.body)
			if s.lookup == "" || s.lookup[0] != 's' {
				t.Fatalf("session %+v, want one named by %s", s, c.name)
			}
			if h := named(header("X-Session-Id", "abc"), c.body); h.lookup == s.lookup {
				t.Errorf("X-Session-Id and %s give the same key: the header should win with a key of its own", c.name)
			}
		})
	}
	t.Run("headers only", func(t *testing.T) {
		if s := sessionOf(http.Header{}, "t1", "m", []byte(`{"user":"alice","messages":[{"role":"user","content":"hi"}]}`), false); s.lookup != "" || len(s.remember) != 0 {
			t.Errorf("a route whose body names no session: %+v from its body, want nothing", s)
		}
		if s := sessionOf(header("X-Session-Id", "abc"), "t1", "m", nil, false); s.lookup == "" {
			t.Error("a route whose body names no session: nothing from its X-Session-Id")
		}
	})
	t.Run("header order", func(t *testing.T) {
		first := named(header("X-Session-Id", "one"), "{}")
		both := named(header("X-Session-Id", "one", "X-Claude-Code-Session-Id", "two"), "{}")
		if both.lookup != first.lookup {
			t.Errorf("with X-Session-Id and Claude Code's header the key is %s, want X-Session-Id's %s", both.lookup, first.lookup)
		}
	})
	t.Run("prefix", func(t *testing.T) {
		turn1, turn2, turn3 := named(http.Header{}, chatBody(1)), named(http.Header{}, chatBody(3)), named(http.Header{}, chatBody(5))
		if turn1.lookup != "" || len(turn1.remember) != 1 {
			t.Errorf("first turn %+v: want nothing to look up, its conversation remembered", turn1)
		}
		if turn2.lookup != turn1.remember[0] || turn3.lookup != turn2.remember[0] {
			t.Errorf("turns %+v, %+v, %+v: each should look up what the previous one remembered", turn1, turn2, turn3)
		}
		other := named(http.Header{}, `{"model":"llama3.2","messages":[{"role":"user","content":"other"},{"role":"assistant","content":"a"},{"role":"user","content":"b"}]}`)
		if other.lookup == turn1.remember[0] {
			t.Error("another conversation looks up the first one's key")
		}
	})
	t.Run("responses input", func(t *testing.T) {
		one := named(http.Header{}, `{"model":"m","input":[{"role":"user","content":"hi"}]}`)
		two := named(http.Header{}, `{"model":"m","input":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":"more"}]}`)
		if len(one.remember) != 1 || two.lookup != one.remember[0] {
			t.Errorf("responses turns %+v, %+v: the second should look up the first", one, two)
		}
		if s := named(http.Header{}, `{"model":"m","input":"hi"}`); s.lookup != "" || len(s.remember) != 0 {
			t.Errorf("a string input gave %+v, want nothing", s)
		}
	})
	t.Run("scope", func(t *testing.T) {
		h := header("X-Session-Id", "abc")
		keys := map[string]string{}
		for _, c := range []struct{ scope, model string }{{"t1", "llama3.2"}, {"t2", "llama3.2"}, {"", "llama3.2"}, {"t1", "qwen3"}} {
			k := sessionOf(h, c.scope, c.model, []byte("{}"), true).lookup
			if prev, dup := keys[k]; dup {
				t.Errorf("tenant/model %s/%s and %s share key %s", c.scope, c.model, prev, k)
			}
			keys[k] = c.scope + "/" + c.model
			p := sessionOf(http.Header{}, c.scope, c.model, []byte(chatBody(3)), true).lookup
			if prev, dup := keys[p]; dup {
				t.Errorf("the conversation of tenant/model %s/%s shares key %s with %s", c.scope, c.model, p, prev)
			}
			keys[p] = c.scope + "/" + c.model + " conversation"
		}
	})
	for _, c := range []struct{ name, body string }{
		{"not JSON", `not json`},
		{"no messages", `{"model":"m","prompt":"hi"}`},
		{"messages not a list", `{"model":"m","messages":{"role":"user"}}`},
		{"user not a string", `{"model":"m","user":42}`},
		{"empty list", `{"model":"m","messages":[]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if s := named(http.Header{}, c.body); s.lookup != "" || len(s.remember) != 0 {
				t.Errorf("session %+v, want none", s)
			}
		})
	}
}

// TestAffinityIsBounded: the memory keeps at most its size, dropping the
// least recently used, and forgets turns older than its TTL.
func TestAffinityIsBounded(t *testing.T) {
	a := newAffinity(prometheus.NewRegistry(), 3, time.Hour)
	sess := func(i int) session { return sessionOf(header("X-Session-Id", fmt.Sprint(i)), "", "m", nil, false) }
	a.served(sess(0), "", 1)
	if n := a.len(); n != 0 {
		t.Fatalf("%d turns remembered without a worker, want none", n)
	}
	for i := range 5 {
		a.served(sess(i), fmt.Sprintf("w%d", i), 1)
	}
	if n := a.len(); n != 3 {
		t.Errorf("%d turns remembered, want the bound, 3", n)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := a.get(sess(i).lookup); ok != want {
			t.Errorf("session %d remembered: %v, want %v", i, ok, want)
		}
	}
	expired := newAffinity(prometheus.NewRegistry(), 3, 0)
	expired.served(sess(1), "w1", 1)
	if _, ok := expired.get(sess(1).lookup); ok {
		t.Error("a turn older than the TTL was found")
	}
	if n := expired.len(); n != 0 {
		t.Errorf("%d expired turns kept, want none", n)
	}
}

// FuzzSessionOf: any body and header give a session without panicking,
// the same one each time, with keys of a bounded size.
func FuzzSessionOf(f *testing.F) {
	f.Add("", chatBody(3))
	f.Add("abc", `{"user":"u","metadata":{"user_id":"x"}}`)
	f.Add("", `{"input":[1,2,3],"messages":null}`)
	f.Add("", `{"metadata":"x","prompt_cache_key":7}`)
	f.Fuzz(func(t *testing.T, id, body string) {
		h := http.Header{}
		if id != "" {
			h.Set("Session-Id", id)
		}
		a, b := sessionOf(h, "t", "m", []byte(body), true), sessionOf(h, "t", "m", []byte(body), true)
		if a.lookup != b.lookup || len(a.remember) != len(b.remember) {
			t.Fatalf("two derivations differ: %+v, %+v", a, b)
		}
		for _, k := range append([]string{a.lookup}, a.remember...) {
			if len(k) > 33 {
				t.Fatalf("key %q longer than 33 bytes", k)
			}
		}
	})
}
