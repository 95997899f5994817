// Package apikey holds the HTTP API keys of a fleet: records in the
// ollamaq_keys KV bucket, each with the SHA-256 of its secret (never the
// secret), a tenant, a role, the models it may use and its rate limits. A
// Store creates, lists, revokes and rotates them (ollamaq keys); a Cache
// follows the bucket so that every dispatcher checks a key with no round
// trip and sees a revocation as soon as the bucket has it (docs/security.md).
//
// It also holds the dispatchers' shared MAC secret, which signs the key and
// tenant a dispatcher states on a job, so readers of the audit trail can tell
// them from a claim a NATS client wrote into its own job.
package apikey
