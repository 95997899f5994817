package clients_test

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// keyClient returns an SDK client for the dispatcher at base that presents
// secret, none if it is empty, and does not retry. The empty admin key keeps
// an OPENAI_ADMIN_KEY in the environment from being sent instead: the SDK
// prefers it to the API key.
func keyClient(base, secret string, opts ...option.RequestOption) openai.Client {
	return newOpenAI(base, append([]option.RequestOption{option.WithAPIKey(secret), option.WithAdminAPIKey("")}, opts...)...)
}

// attempt is one HTTP request the SDK made, as its middleware saw it.
type attempt struct {
	status     int
	retryAfter string // the response's Retry-After
	retryCount string // the request's X-Stainless-Retry-Count: 0 for the first try
	auth       string // the request's Authorization
	sent, done time.Time
}

// attempts records every request an SDK client makes (option.WithMiddleware).
type attempts struct {
	mu   sync.Mutex
	list []attempt
}

func (a *attempts) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	at := attempt{retryCount: req.Header.Get("X-Stainless-Retry-Count"), auth: req.Header.Get("Authorization"), sent: time.Now()}
	resp, err := next(req)
	at.done = time.Now()
	if resp != nil {
		at.status, at.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	a.mu.Lock()
	a.list = append(a.list, at)
	a.mu.Unlock()
	return resp, err
}

// take returns the attempts recorded since the last take.
func (a *attempts) take() []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.list
	a.list = nil
	return l
}

// send makes a plain HTTP request with the key secret (none if empty), for
// the routes the SDK has no method for, and returns the status and body.
func send(t *testing.T, method, url, secret, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// modelIDs lists the models the client may see, sorted.
func modelIDs(t *testing.T, c openai.Client) []string {
	t.Helper()
	page, err := c.Models.List(t.Context())
	if err != nil {
		t.Fatalf("list models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// retryAfter returns an error's Retry-After in seconds, failing the test
// unless it is a whole number from 1 to 60.
func retryAfter(t *testing.T, e *openai.Error) time.Duration {
	t.Helper()
	h := e.Response.Header.Get("Retry-After")
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 || n > 60 {
		t.Fatalf("Retry-After = %q, want 1 to 60 seconds", h)
	}
	return time.Duration(n) * time.Second
}

// waitOut waits for d to pass, as a Retry-After asks: the key's bucket
// refills meanwhile. This is a wait for time, not for a condition.
func waitOut(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-time.After(d):
	case <-t.Context().Done():
		t.Fatal("the test ended while waiting out a Retry-After")
	}
}

// TestOpenAIGoSDKKeys drives a dispatcher that requires API keys with the
// OpenAI Go SDK: every refusal is the SDK's *openai.Error with OpenAI's
// status, type and code, so an application sees what api.openai.com would
// have told it.
func TestOpenAIGoSDKKeys(t *testing.T) {
	for _, m := range fleettest.AuthModes {
		t.Run(m.Name, func(t *testing.T) { testOpenAIGoSDKKeys(t, m.Auth) })
	}
}

func testOpenAIGoSDKKeys(t *testing.T, auth bool) {
	f := startFleet(t, fleettest.Options{Auth: auth, Keys: true})
	chat := openai.ChatCompletionNewParams{
		Model:    chatModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Why is the sky blue?")},
	}

	t.Run("without a valid key", func(t *testing.T) {
		_, expired := f.CreateKey(apikey.Key{Name: "old", Tenant: "acme", Role: apikey.User, Expires: time.Now().Add(-time.Minute)})
		cases := []struct{ name, secret, want string }{
			{"missing", "", "missing API key"},
			{"not ours", "ollama", "malformed API key"}, // What Ollama's docs tell OpenAI clients to send.
			{"unknown", apikey.Prefix + "000000000000_" + strings.Repeat("A", 43), "unknown API key"},
			{"expired", expired, "expired API key"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				rec := &attempts{}
				client := keyClient(f.URL, c.secret, option.WithMiddleware(rec.middleware))
				_, err := client.Chat.Completions.New(t.Context(), chat)
				e := apiError(t, err)
				if e.StatusCode != http.StatusUnauthorized || e.Code != "invalid_api_key" || e.Type != "invalid_request_error" || !strings.Contains(e.Message, c.want) {
					t.Errorf("got %d type %q code %q %q, want 401 invalid_request_error invalid_api_key %q", e.StatusCode, e.Type, e.Code, e.Message, c.want)
				}
				if got := e.Response.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
				}
				sent := rec.take()
				if len(sent) != 1 {
					t.Fatalf("the SDK sent %d requests, want 1: a 401 is not retried", len(sent))
				}
				want := ""
				if c.secret != "" {
					want = "Bearer " + c.secret
				}
				if sent[0].auth != want {
					t.Errorf("the SDK sent Authorization %q, want %q", sent[0].auth, want)
				}
				if _, err := client.Models.List(t.Context()); apiError(t, err).StatusCode != http.StatusUnauthorized {
					t.Errorf("list models: %v, want 401", err)
				}
			})
		}
	})

	t.Run("model outside the key", func(t *testing.T) {
		_, secret := f.CreateKey(apikey.Key{Name: "embedder", Tenant: "acme", Role: apikey.User, Models: []string{embedModel}})
		c := keyClient(f.URL, secret)
		_, err := c.Chat.Completions.New(t.Context(), chat)
		e := apiError(t, err)
		want := "model '" + chatModel + "' is not allowed for API key"
		if e.StatusCode != http.StatusForbidden || e.Code != "permission_denied" || !strings.Contains(e.Message, want) {
			t.Errorf("chat: got %d code %q %q, want 403 permission_denied %q", e.StatusCode, e.Code, e.Message, want)
		}
		s := c.Chat.Completions.NewStreaming(t.Context(), chat)
		for s.Next() {
			t.Errorf("a chunk for a refused stream: %s", s.Current().RawJSON())
		}
		if e := apiError(t, s.Err()); e.StatusCode != http.StatusForbidden || e.Code != "permission_denied" {
			t.Errorf("chat streaming: got %d code %q, want 403 permission_denied", e.StatusCode, e.Code)
		}
		_ = s.Close() // Nothing was streamed; closing the refused response cannot matter.
		if got := modelIDs(t, c); !slices.Equal(got, []string{embedModel}) {
			t.Errorf("models listed for the key = %q, want only %q", got, embedModel)
		}
		if _, err := c.Models.Get(t.Context(), chatModel); apiError(t, err).StatusCode != http.StatusNotFound {
			t.Errorf("retrieve %s: %v, want 404 as for a model the fleet does not have", chatModel, err)
		}
		// The key's own model is served.
		res, err := c.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
			Model: embedModel,
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("The sky is blue.")},
		})
		if err != nil || len(res.Data) != 1 {
			t.Errorf("embeddings with the key's model: %v", err)
		}
	})

	t.Run("requests per minute", func(t *testing.T) {
		// 120 a minute: a burst of 120, then one every half second.
		_, secret := f.CreateKey(apikey.Key{Name: "burst", Tenant: "acme", Role: apikey.User, RPM: 120})
		c := keyClient(f.URL, secret)
		short := chat
		short.MaxTokens = openai.Int(1) // Fast: the test spends the whole burst.
		served := 0
		began := time.Now()
		var limited *openai.Error
		for limited == nil && served <= 150 {
			if _, err := c.Chat.Completions.New(t.Context(), short); err != nil {
				limited = apiError(t, err)
				break
			}
			served++
		}
		if limited == nil {
			t.Fatalf("served %d requests of a key with 120 a minute, want a 429", served)
		}
		if refill := int(2 * time.Since(began).Seconds()); served < 120 || served > 120+refill+1 {
			t.Errorf("served %d requests before the 429, want the burst of 120 + %d refilled", served, refill)
		}
		if limited.StatusCode != http.StatusTooManyRequests || limited.Code != "rate_limit_exceeded" || limited.Type != "requests" ||
			!strings.Contains(limited.Message, "requests per minute") {
			t.Errorf("got %d type %q code %q %q, want 429 requests rate_limit_exceeded over the requests per minute",
				limited.StatusCode, limited.Type, limited.Code, limited.Message)
		}
		wait := retryAfter(t, limited)
		if wait != time.Second {
			t.Errorf("Retry-After = %s, want 1s (a request every half second)", wait)
		}
		waitOut(t, wait)
		if _, err := c.Chat.Completions.New(t.Context(), short); err != nil {
			t.Fatalf("after waiting out Retry-After: %v, want it served", err)
		}

		// The SDK's own retries (two by default) wait what Retry-After says
		// (internal/requestconfig: 429 is retryable, Retry-After-Ms or
		// Retry-After up to two minutes is the delay), so an application
		// that keeps the defaults is served once the bucket refills.
		rec := &attempts{}
		retrying := openai.NewClient(option.WithBaseURL(f.URL+"/v1/"), option.WithAPIKey(secret), option.WithAdminAPIKey(""),
			option.WithMiddleware(rec.middleware))
		for i := 0; ; i++ {
			if i == 5 {
				t.Fatal("five requests in a row were each served at the first attempt: the key's budget never ran out")
			}
			if _, err := retrying.Chat.Completions.New(t.Context(), short); err != nil {
				t.Fatalf("with the SDK's default retries: %v, want it served after a retry", err)
			}
			tries := rec.take()
			if len(tries) == 1 {
				continue // The budget had a request left.
			}
			first, second := tries[0], tries[1]
			if len(tries) != 2 || first.status != http.StatusTooManyRequests || second.status != http.StatusOK || second.retryCount != "1" {
				t.Fatalf("attempts %+v, want a 429 and then a 200 on retry 1", tries)
			}
			wait, _ := strconv.Atoi(first.retryAfter) // Checked above: a whole number.
			if gap := second.sent.Sub(first.done); gap < time.Duration(wait)*time.Second {
				t.Errorf("the SDK retried %s after the 429, want it to wait Retry-After %ss", gap, first.retryAfter)
			} else {
				t.Logf("the SDK retried %s after a 429 with Retry-After %ss, and was served", gap.Round(time.Millisecond), first.retryAfter)
			}
			break
		}
	})

	t.Run("revoked on every dispatcher", func(t *testing.T) {
		second := f.StartDispatcher("dtest2")
		k, secret := f.CreateKey(apikey.Key{Name: "leaver", Tenant: "acme", Role: apikey.User})
		bases := []string{f.URL, second}
		for _, base := range bases {
			c := keyClient(base, secret)
			if _, err := c.Chat.Completions.New(t.Context(), chat); err != nil {
				t.Fatalf("chat on %s before the revocation: %v", base, err)
			}
		}
		revoked := time.Now()
		if _, err := f.Keys().Revoke(t.Context(), k.ID, revoked); err != nil {
			t.Fatal(err)
		}
		for _, base := range bases {
			c := keyClient(base, secret)
			// Both within one second of the revocation, not one each.
			fleettest.WaitFor(t, time.Until(revoked.Add(time.Second)), "the revoked key to be refused by "+base, func() bool {
				_, err := c.Models.List(t.Context())
				var e *openai.Error
				return errors.As(err, &e) && e.StatusCode == http.StatusUnauthorized
			})
			_, err := c.Chat.Completions.New(t.Context(), chat)
			if e := apiError(t, err); e.StatusCode != http.StatusUnauthorized || e.Code != "invalid_api_key" || !strings.Contains(e.Message, "revoked API key") {
				t.Errorf("chat on %s: got %d code %q %q, want 401 invalid_api_key revoked API key", base, e.StatusCode, e.Code, e.Message)
			}
		}
		t.Logf("refused by both dispatchers %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	})

	t.Run("tokens per minute", func(t *testing.T) {
		// 600 a minute, ten a second: two answers of 300 tokens use it up.
		_, secret := f.CreateKey(apikey.Key{Name: "talker", Tenant: "tpm", Role: apikey.User, TPM: 600})
		_, admin := f.CreateKey(apikey.Key{Name: "ops", Tenant: "ops", Role: apikey.Admin})
		c := keyClient(f.URL, secret)
		long := chat
		const answer = 300
		long.MaxTokens = openai.Int(answer)
		spent := 0
		began := time.Now()
		var limited *openai.Error
		for i := 0; limited == nil; i++ {
			if i == 5 {
				t.Fatalf("served 5 answers, %d tokens, of a key with 600 a minute; want a 429", spent)
			}
			res, err := c.Chat.Completions.New(t.Context(), long)
			if err != nil {
				limited = apiError(t, err)
				break
			}
			if i == 0 && tenantTokens(t, f, admin, "tpm") == 0 {
				t.Skip("the dispatcher counted no tokens for the served answer: workers do not report them on done yet (job.Reply.Usage)")
			}
			spent += int(res.Usage.TotalTokens)
		}
		// A request is admitted while the budget has a token left, and the
		// budget refills at ten a second while the test runs: the refusal
		// comes after 600 tokens, and at most one answer (and its prompt)
		// beyond what refilled.
		if refill := int(10 * time.Since(began).Seconds()); spent < 600 || spent > 600+refill+answer+50 {
			t.Errorf("refused after %d tokens, want after 600 to %d (600 + %d refilled + one answer)", spent, 600+refill+answer+50, refill)
		}
		if limited.StatusCode != http.StatusTooManyRequests || limited.Code != "rate_limit_exceeded" || !strings.Contains(limited.Message, "tokens per minute") {
			t.Errorf("got %d code %q %q, want 429 rate_limit_exceeded over the tokens per minute", limited.StatusCode, limited.Code, limited.Message)
		}
		wait := retryAfter(t, limited)
		t.Logf("refused after %d tokens, Retry-After %s", spent, wait)
		waitOut(t, wait)
		if _, err := c.Chat.Completions.New(t.Context(), long); err != nil {
			t.Errorf("after waiting out Retry-After: %v, want it served", err)
		}
	})

	// The SDK has no methods for Ollama's management routes: plain HTTP.
	t.Run("management routes", func(t *testing.T) {
		_, user := f.CreateKey(apikey.Key{Name: "alice", Tenant: "acme", Role: apikey.User})
		_, admin := f.CreateKey(apikey.Key{Name: "root", Tenant: "ops", Role: apikey.Admin})
		const copied = "llama3.2-copy:latest"
		for _, c := range []struct{ method, path, body string }{
			{"POST", "/api/pull", `{"model":"` + chatModel + `"}`},
			{"DELETE", "/api/delete", `{"model":"` + chatModel + `"}`},
			{"POST", "/api/copy", `{"source":"` + chatModel + `","destination":"` + copied + `"}`},
			{"GET", "/metrics", ""},
		} {
			if status, body := send(t, c.method, f.URL+c.path, user, c.body); status != http.StatusForbidden || !strings.Contains(body, "needs an admin API key") {
				t.Errorf("%s %s with a user key: %d %s, want 403 needing an admin key", c.method, c.path, status, body)
			}
		}
		if status, body := send(t, "POST", f.URL+"/api/copy", admin, `{"source":"`+chatModel+`","destination":"`+copied+`"}`); status != http.StatusOK {
			t.Fatalf("copy with an admin key: %d %s, want 200", status, body)
		}
		c := keyClient(f.URL, admin)
		fleettest.WaitFor(t, 5*time.Second, "the copy to be listed", func() bool { return slices.Contains(modelIDs(t, c), copied) })
	})
}

// tenantTokens is the tokens the dispatcher counted for tenant's finished
// jobs (ollamamax_tenant_tokens_total), read from /metrics with an admin key.
func tenantTokens(t *testing.T, f *fleettest.Fleet, admin, tenant string) float64 {
	t.Helper()
	status, body := send(t, "GET", f.URL+"/metrics", admin, "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics with an admin key: %d %s", status, body)
	}
	var n float64
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, `ollamamax_tenant_tokens_total{tenant="`+tenant+`"`) {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			n += v
		}
	}
	return n
}
