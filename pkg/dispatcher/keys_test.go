package dispatcher_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/audit"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// keysFleet is a fleet whose dispatcher requires API keys, with two models.
func keysFleet(t *testing.T, auth bool) *fleettest.Fleet {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{{Name: "llama3.2:latest"}, {Name: "qwen3:0.6b"}}
	sim.TokensPerSecond, sim.TimeToFirstToken = 2000, time.Millisecond
	return fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim, Keys: true, Auth: auth})
}

// call sends a request with the key secret (none if empty) and returns the
// status, the Retry-After header and the body.
func call(t *testing.T, method, url, secret, body string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

const chatBody = `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}`

// TestKeysRefuseWithoutAValidKey: every way a key can be wrong is a 401 in
// the route's own error shape, and nothing is queued.
func TestKeysRefuseWithoutAValidKey(t *testing.T) {
	f := keysFleet(t, false)
	good, secret := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
	_, expired := f.CreateKey(apikey.Key{Name: "old", Tenant: "acme", Role: apikey.User, Expires: time.Now().Add(-time.Minute)})
	_, revoked := f.CreateKey(apikey.Key{Name: "gone", Tenant: "acme", Role: apikey.User})
	gone, _ := apikey.ParseID(revoked)
	if _, err := f.Keys().Revoke(t.Context(), gone, time.Now()); err != nil {
		t.Fatal(err)
	}
	unknown := apikey.Prefix + "000000000000_" + strings.Repeat("A", 43)
	cases := []struct{ name, secret, header, want string }{
		{"missing", "", "", "missing API key"},
		{"malformed", "", "Basic dXNlcjpwYXNz", "malformed API key"},
		{"not ours", "sk-abc", "", "malformed API key"},
		{"unknown", unknown, "", "unknown API key"},
		{"wrong secret", secret[:len(secret)-1] + "B", "", "unknown API key"},
		{"expired", expired, "", "expired API key"},
		{"revoked", revoked, "", "revoked API key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.header != "" {
				hdr = []string{"Authorization", c.header}
			}
			// The revocation reaches the dispatcher's cache through its watch.
			fleettest.WaitFor(t, 5*time.Second, "the key state to be "+c.want, func() bool {
				status, _, body := call(t, "POST", f.URL+"/api/chat", c.secret, chatBody, hdr...)
				return status == http.StatusUnauthorized && strings.Contains(body, c.want)
			})
			status, _, body := call(t, "POST", f.URL+"/v1/chat/completions", c.secret, `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}`, hdr...)
			var oe struct {
				Error struct{ Message, Type, Code string }
			}
			if status != http.StatusUnauthorized || json.Unmarshal([]byte(body), &oe) != nil || oe.Error.Code != "invalid_api_key" || !strings.Contains(oe.Error.Message, c.want) {
				t.Errorf("OpenAI route: %d %s, want 401 with OpenAI's error object, code invalid_api_key", status, body)
			}
		})
	}
	// The public routes answer without a key; the good key is served.
	for _, path := range []string{"/", "/api/version", "/healthz", "/readyz"} {
		if status, _, body := call(t, "GET", f.URL+path, "", ""); status != http.StatusOK {
			t.Errorf("GET %s without a key: %d %s, want 200", path, status, body)
		}
	}
	if status, _, body := call(t, "POST", f.URL+"/api/chat", secret, chatBody); status != http.StatusOK {
		t.Errorf("with key %s: %d %s, want 200", good.ID, status, body)
	}
	// The x-api-key header, as Anthropic's SDK sends it, works too.
	if status, _, body := call(t, "POST", f.URL+"/api/chat", "", chatBody, "x-api-key", secret); status != http.StatusOK {
		t.Errorf("with x-api-key: %d %s, want 200", status, body)
	}
	// Only the two good requests were queued.
	if got := submitted(t, f); got != 2 {
		t.Errorf("jobs queued = %d, want 2: a refused request must queue nothing", got)
	}
}

// submitted reads the dispatcher's count of queued jobs from /metrics,
// with an admin key.
func submitted(t *testing.T, f *fleettest.Fleet) int {
	t.Helper()
	_, admin := f.CreateKey(apikey.Key{Name: "metrics", Tenant: "ops", Role: apikey.Admin})
	status, _, body := call(t, "GET", f.URL+"/metrics", admin, "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics with an admin key: %d %s", status, body)
	}
	n := 0
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "ollamamax_jobs_submitted_total{") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), 64)
			n += int(v)
		}
	}
	return n
}

// TestKeysLimitModelsAndRoutes: a key limited to some models gets 403 for
// the others and does not see them listed; management routes need an
// admin key.
func TestKeysLimitModelsAndRoutes(t *testing.T) {
	for _, mode := range fleettest.AuthModes {
		t.Run(mode.Name, func(t *testing.T) {
			f := keysFleet(t, mode.Auth)
			_, user := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User, Models: []string{"qwen*"}})
			_, admin := f.CreateKey(apikey.Key{Name: "root", Tenant: "ops", Role: apikey.Admin})

			status, _, body := call(t, "POST", f.URL+"/api/chat", user, chatBody)
			if status != http.StatusForbidden || !strings.Contains(body, "not allowed") {
				t.Errorf("chat with a model outside the key: %d %s, want 403", status, body)
			}
			status, _, body = call(t, "POST", f.URL+"/api/chat", user, strings.Replace(chatBody, "llama3.2", "qwen3:0.6b", 1))
			if status != http.StatusOK {
				t.Errorf("chat with the key's model: %d %s, want 200", status, body)
			}
			status, _, body = call(t, "POST", f.URL+"/api/show", user, `{"model":"llama3.2"}`)
			if status != http.StatusForbidden {
				t.Errorf("show a model outside the key: %d %s, want 403", status, body)
			}
			for _, path := range []string{"/api/tags", "/v1/models"} {
				_, _, body := call(t, "GET", f.URL+path, user, "")
				if strings.Contains(body, "llama3.2") || !strings.Contains(body, "qwen3:0.6b") {
					t.Errorf("%s for the key lists %s, want qwen3:0.6b only", path, body)
				}
				_, _, body = call(t, "GET", f.URL+path, admin, "")
				if !strings.Contains(body, "llama3.2") || !strings.Contains(body, "qwen3:0.6b") {
					t.Errorf("%s for an unlimited key lists %s, want both models", path, body)
				}
			}
			if status, _, _ := call(t, "GET", f.URL+"/v1/models/llama3.2", user, ""); status != http.StatusNotFound {
				t.Errorf("GET /v1/models/llama3.2 for the key: %d, want 404", status)
			}

			for _, c := range []struct{ method, path, body string }{
				{"POST", "/api/pull", `{"model":"qwen3:0.6b"}`},
				{"DELETE", "/api/delete", `{"model":"qwen3:0.6b"}`},
				{"POST", "/api/copy", `{"source":"qwen3:0.6b","destination":"mine"}`},
				{"GET", "/metrics", ""},
			} {
				status, _, body := call(t, c.method, f.URL+c.path, user, c.body)
				if status != http.StatusForbidden || !strings.Contains(body, "admin") {
					t.Errorf("%s %s with a user key: %d %s, want 403", c.method, c.path, status, body)
				}
			}
			status, _, body = call(t, "POST", f.URL+"/api/copy", admin, `{"source":"qwen3:0.6b","destination":"mine"}`)
			if status != http.StatusOK {
				t.Fatalf("copy with an admin key: %d %s", status, body)
			}
			// The management action is in the audit trail, with its key.
			rec := lastAudit(t, f, job.AuditAdmin)
			if rec.Action != "copy" || rec.Model != "qwen3:0.6b" || rec.Tenant != "ops" || rec.Outcome != audit.Done {
				t.Errorf("audit record %+v, want the copy of qwen3:0.6b by tenant ops, done", rec)
			}
		})
	}
}

// lastAudit returns the newest audit record of kind, waiting for one.
func lastAudit(t *testing.T, f *fleettest.Fleet, kind string) audit.Record {
	t.Helper()
	st, err := f.Queue.JetStream().Stream(t.Context(), job.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	var rec audit.Record
	fleettest.WaitFor(t, 5*time.Second, "an audit record of kind "+kind, func() bool {
		m, err := st.GetLastMsgForSubject(t.Context(), job.AuditFilter(kind, ""))
		return err == nil && json.Unmarshal(m.Data, &rec) == nil
	})
	return rec
}

// TestKeysRateLimits: over its requests or tokens per minute a key gets 429
// with Retry-After, and is served again after it; the budget is one across
// two dispatchers.
func TestKeysRateLimits(t *testing.T) {
	t.Run("requests", func(t *testing.T) {
		f := keysFleet(t, false)
		second := f.StartDispatcher("dtest2")
		// 120 a minute: a burst of 120, then one every half second.
		_, secret := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User, RPM: 120})
		served := 0
		var retry string
		began := time.Now()
		for i := 0; i < 200; i++ {
			url := f.URL
			if i%2 == 1 {
				url = second // Alternate: the two dispatchers share one budget.
			}
			status, ra, body := call(t, "POST", url+"/api/chat", secret, chatBody)
			if status == http.StatusTooManyRequests {
				retry = ra
				if !strings.Contains(body, "requests per minute") {
					t.Errorf("429 body %s, want it to name the requests limit", body)
				}
				break
			}
			if status != http.StatusOK {
				t.Fatalf("request %d: %d %s", i, status, body)
			}
			served++
		}
		// The bucket refills at two a second while the test runs. Charges
		// cross between the dispatchers in milliseconds, so with sequential
		// requests at most a couple slip through before they arrive.
		refill := int(2 * time.Since(began).Seconds())
		if served < 118 || served > 120+refill+2 {
			t.Errorf("served %d requests before the first 429, want 120 (the key's burst, shared by both dispatchers) + %d refilled", served, refill)
		}
		if retry != "1" {
			t.Errorf("Retry-After = %q, want 1 (a request every half second)", retry)
		}
		fleettest.WaitFor(t, 3*time.Second, "the key to be served again", func() bool {
			status, _, _ := call(t, "POST", second+"/api/chat", secret, chatBody)
			return status == http.StatusOK
		})
	})
	t.Run("tokens", func(t *testing.T) {
		f := keysFleet(t, false)
		// 600 a minute, ten a second: two answers of 300 tokens use it up.
		_, secret := f.CreateKey(apikey.Key{Name: "bob", Tenant: "acme", Role: apikey.User, TPM: 600})
		long := `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_predict":300}}`
		var status int
		var retry, body string
		for i := 0; i < 5; i++ {
			if status, retry, body = call(t, "POST", f.URL+"/api/chat", secret, long); status != http.StatusOK {
				break
			}
		}
		if status != http.StatusTooManyRequests || !strings.Contains(body, "tokens per minute") {
			t.Fatalf("after 5 answers of 300 tokens: %d %s, want 429 over the tokens limit", status, body)
		}
		n, err := strconv.Atoi(retry)
		if err != nil || n < 1 || n > 60 {
			t.Errorf("Retry-After = %q, want 1 to 60 seconds", retry)
		}
	})
}

// TestKeysRevokeReachesEveryDispatcher: a key revoked in the bucket is
// refused by every dispatcher within a second.
func TestKeysRevokeReachesEveryDispatcher(t *testing.T) {
	f := keysFleet(t, false)
	second := f.StartDispatcher("dtest2")
	k, secret := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
	for _, url := range []string{f.URL, second} {
		fleettest.WaitFor(t, 5*time.Second, "the new key to be in force", func() bool {
			status, _, _ := call(t, "GET", url+"/api/tags", secret, "")
			return status == http.StatusOK
		})
	}
	revoked := time.Now()
	if _, err := f.Keys().Revoke(t.Context(), k.ID, revoked); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{f.URL, second} {
		fleettest.WaitFor(t, time.Second, "the revoked key to be refused by "+url, func() bool {
			status, _, _ := call(t, "GET", url+"/api/tags", secret, "")
			return status == http.StatusUnauthorized
		})
	}
	t.Logf("refused by both dispatchers %s after the revocation", time.Since(revoked).Round(time.Millisecond))
}

// TestKeysStateJobHeaders: a job carries its key and tenant with a MAC the
// audit trail verifies.
func TestKeysStateJobHeaders(t *testing.T) {
	f := keysFleet(t, false)
	k, secret := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
	// Watch the jobs as they are published.
	sub, err := f.NC.SubscribeSync(job.JobsPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := call(t, "POST", f.URL+"/api/chat", secret, chatBody); status != http.StatusOK {
		t.Fatalf("chat: %d %s", status, body)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	kv, err := f.Queue.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mac, err := apikey.MACSecret(t.Context(), kv)
	if err != nil {
		t.Fatal(err)
	}
	_, _, requester, _ := job.ParseJobSubject(m.Subject)
	rec := audit.Record{Job: h.Get(job.HeaderJob), Requester: requester, Key: h.Get(job.HeaderKey), Tenant: h.Get(job.HeaderTenant), MAC: h.Get(job.HeaderKeyMAC)}
	if rec.Key != k.ID || rec.Tenant != "acme" || !rec.Verified(mac) {
		t.Errorf("job headers key %q tenant %q mac %q: want key %s, tenant acme, a MAC that verifies", rec.Key, rec.Tenant, rec.MAC, k.ID)
	}
	rec.Tenant = "other"
	if rec.Verified(mac) {
		t.Error("a MAC verified for another tenant")
	}
}

// TestWithdrawnJobIsAudited: a job no worker took before its queue wait
// ended is withdrawn by the dispatcher, which writes its audit record.
func TestWithdrawnJobIsAudited(t *testing.T) {
	f := fleettest.Start(t, fleettest.Options{Workers: 1, Keys: true, QueueWait: time.Second})
	k, secret := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
	f.StopWorker(0)
	status, _, body := call(t, "POST", f.URL+"/api/chat", secret, chatBody)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("chat with no worker: %d %s, want 503", status, body)
	}
	rec := lastAudit(t, f, job.AuditJob)
	if rec.Outcome != audit.Withdrawn || rec.Key != k.ID || rec.Tenant != "acme" || rec.Model != "llama3.2:latest" || rec.Route != "/api/chat" {
		t.Errorf("audit record %+v, want the withdrawn chat of key %s", rec, k.ID)
	}
}

// TestKeysCannotBeTalkedAround: the ways around a key's limits found in
// review are closed: a body naming its model twice, an admin key limited
// to some models managing others, /api/show past the requests limit, and
// hanging up mid-stream to escape the tokens limit.
func TestKeysCannotBeTalkedAround(t *testing.T) {
	f := keysFleet(t, false)
	_, user := f.CreateKey(apikey.Key{Name: "q", Tenant: "acme", Role: apikey.User, Models: []string{"qwen3*"}})
	twice := `{"model":"llama3.2","Model":"qwen3:0.6b","messages":[{"role":"user","content":"hi"}],"stream":true}`
	if status, _, body := call(t, "POST", f.URL+"/v1/chat/completions", user, twice); status != http.StatusBadRequest || !strings.Contains(body, "more than once") {
		t.Errorf("a body naming its model twice: %d %s, want 400", status, body)
	}

	_, admin := f.CreateKey(apikey.Key{Name: "qa", Tenant: "ops", Role: apikey.Admin, Models: []string{"qwen3*"}})
	for _, c := range []struct{ method, path, body string }{
		{"DELETE", "/api/delete", `{"model":"llama3.2"}`},
		{"POST", "/api/copy", `{"source":"llama3.2","destination":"qwen3:stolen"}`},
		{"POST", "/api/copy", `{"source":"qwen3:0.6b","destination":"llama3.2:mine"}`},
		{"POST", "/api/pull", `{"model":"llama3.2"}`},
	} {
		if status, _, body := call(t, c.method, f.URL+c.path, admin, c.body); status != http.StatusForbidden {
			t.Errorf("%s %s %s with an admin key for qwen3*: %d %s, want 403", c.method, c.path, c.body, status, body)
		}
	}

	_, slow := f.CreateKey(apikey.Key{Name: "s", Tenant: "acme", Role: apikey.User, RPM: 2})
	served := 0
	for range 5 {
		if status, _, _ := call(t, "POST", f.URL+"/api/show", slow, `{"model":"llama3.2"}`); status == http.StatusOK {
			served++
		}
	}
	if served != 2 {
		t.Errorf("/api/show with a key of 2 requests a minute: %d of 5 served, want 2", served)
	}

	// Paced, so the client hangs up long before the done line is sent.
	sim := ollamasim.DefaultConfig()
	sim.TokensPerSecond, sim.TimeToFirstToken = 800, time.Millisecond
	g := fleettest.Start(t, fleettest.Options{Workers: 1, Sim: sim, Keys: true})
	_, tpm := g.CreateKey(apikey.Key{Name: "t", Tenant: "acme", Role: apikey.User, TPM: 600})
	long := `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":2000}}`
	for range 4 { // 4 x 200 tokens read, then gone: over 600.
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "POST", g.URL+"/api/chat", strings.NewReader(long))
		req.Header.Set("Authorization", "Bearer "+tpm)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			cancel()
			_ = resp.Body.Close()
			break // Charged already.
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		for n := 0; n < 200 && sc.Scan(); n++ {
		}
		cancel() // Hang up long before the done line.
		_ = resp.Body.Close()
	}
	// The charges land as the relays notice the hang-ups. /api/show spends
	// no tokens of its own, so only they can get it refused.
	fleettest.WaitFor(t, 5*time.Second, "a key that hung up on 800 tokens to be refused", func() bool {
		status, _, _ := call(t, "POST", g.URL+"/api/show", tpm, `{"model":"llama3.2"}`)
		return status == http.StatusTooManyRequests
	})
}
