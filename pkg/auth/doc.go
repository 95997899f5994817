// Package auth creates and keeps an OllamaMax auth directory: the NATS
// operator, the system account SYS, the account OLLAMAMAX with one scoped
// signing key per role (client, worker, dispatcher, admin) whose template
// holds that role's permissions, and the users issued with those keys.
// docs/security.md explains the roles and why each permission is there.
//
// A user JWT carries no permissions of its own: the server applies the
// template of the key that signed it, with {{name()}} replaced by the
// user's name (a requester token or a worker ID), so every role is bound to
// its own subjects. Revoking a user adds it to the account JWT's
// revocations; PushAccount sends the re-signed account JWT to running
// servers through the system account.
//
// The directory holds seeds: files are written 0600 and directories 0700,
// and nothing here prints a seed. A Dir is not safe for concurrent use, and
// two processes must not change one directory at once.
//
// It imports nats-io/jwt, nkeys, nats.go and the job package; it must not
// import the broker, queue, dispatcher or worker packages.
package auth
