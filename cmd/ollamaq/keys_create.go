package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/ollamamax/ollamamax/pkg/apikey"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
)

const keysCreateSynopsis = `Usage: ollamaq keys create [flags] NAME --tenant TENANT

Creates an HTTP API key called NAME for TENANT and prints its secret on
stdout, alone on its line (with --json, as {"key": RECORD, "secret": SECRET}).
The secret is shown this once and is kept nowhere: store it where the client
reads it. 'ollamaq keys rotate ID' gives the key a new one.

NAME says what the key is for (up to 128 bytes). --tenant is required: it is
who the key's usage is billed to ('ollamaq usage'), letters, digits, '-' and
'_'; a tenant may hold many keys. --models limits the key to models, as
comma-separated names or patterns where * is any run of characters
(llama3* allows llama3.2:1b); names are lower-cased, and a name without * is
made canonical (llama3.2 is llama3.2:latest). Without --models every model
is allowed.

Clients send the secret to a dispatcher as a bearer token, as OpenAI SDKs
send OPENAI_API_KEY: Authorization: Bearer SECRET.

Examples:
  ollamaq keys create ci --tenant acme
  ollamaq keys create webui --tenant acme --models 'llama3*,qwen*' --rpm 60 --tpm 100000 --expires 30d
  ollamaq keys create ops --tenant acme --role admin
  ollamaq keys create evals --tenant acme --lane batch   # runs after interactive and async work
  SECRET=$(ollamaq keys create ci --tenant acme)
`

func cmdKeysCreate(fs *flag.FlagSet) runFunc {
	tenant := fs.String("tenant", "", "the tenant the key's usage counts for (required)")
	models := fs.String("models", "", "the models the key may use, comma-separated names or patterns with * (default: every model)")
	role := fs.String("role", string(apikey.User), "user (inference and listings) or admin (also pull, delete, copy, /metrics)")
	rpm := fs.Int("rpm", 0, "requests per minute the key may make (0: no bound)")
	tpm := fs.Int("tpm", 0, "tokens per minute, prompt and completion (0: no bound)")
	lane := fs.String("lane", "", "the key's priority lane: interactive, async or batch; its default and the highest its requests may ask for with Ollamaq-Priority (default: interactive, any lane)")
	expires := fs.String("expires", "", "how long the key is valid: 30d, 2w, 12h, 90m (default: until revoked)")
	asJSON := fs.Bool("json", false, `print {"key": the record, "secret": the secret} as JSON`)
	return func(ctx context.Context, e *env, args []string) int {
		if len(args) != 1 {
			return e.fail(exitUsage, "keys create: want one NAME (see --help)")
		}
		if *tenant == "" {
			return e.fail(exitUsage, "keys create: --tenant is required: who the key's usage counts for")
		}
		r, err := apikey.ParseRole(*role)
		if err != nil {
			return e.fail(exitUsage, "keys create: --role: want user or admin")
		}
		k := apikey.Key{Name: args[0], Tenant: *tenant, Role: r, RPM: *rpm, TPM: *tpm}
		if *lane != "" {
			if k.Lane, err = job.ParseClass(*lane); err != nil {
				return e.fail(exitUsage, "keys create: --lane %q: want interactive, async or batch", *lane)
			}
		}
		if k.Models, err = parseModels(*models); err != nil {
			return e.fail(exitUsage, "keys create: --models: %v", err)
		}
		now := e.now()
		if *expires != "" {
			d, err := parseExpiry(*expires)
			if err != nil {
				return e.fail(exitUsage, "keys create: --expires %q: %v", *expires, err)
			}
			k.Expires = now.Add(d)
		}
		// The flags are checked here, before connecting: what the store
		// would refuse is a usage error.
		probe, _ := apikey.New(k)
		if err := probe.Validate(); err != nil {
			return e.fail(exitUsage, "keys create: %s", strings.TrimPrefix(err.Error(), "apikey: "))
		}
		return e.withKeys(ctx, func(ctx context.Context, q *queue.Queue, s *apikey.Store) int {
			k, secret, err := s.Create(ctx, k, now)
			if err != nil {
				return e.keyFailed(err)
			}
			notice := fmt.Sprintf("created key %s (%s) for tenant %s, role %s: the secret above is shown only now and will not be shown again",
				k.ID, k.Name, k.Tenant, k.Role)
			if code := e.printSecret(*asJSON, k, secret, notice); code != exitOK {
				return code
			}
			if err := e.auditKey(ctx, q, actionCreate, k); err != nil {
				return e.auditFailed(k.ID, "was created", err)
			}
			return exitOK
		})
	}
}
