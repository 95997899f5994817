package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// ErrPushRefused is returned by PushAccount when a server refused the
// account JWT.
var ErrPushRefused = errors.New("auth: the server refused the account JWT")

// ClaimsUpdateSubject is where a user of the system account sends an
// account JWT for the servers' resolvers to store and apply at once.
const ClaimsUpdateSubject = "$SYS.REQ.CLAIMS.UPDATE"

// PushAccount sends accountJWT to the servers nc is connected to, through
// the system account: nc must be a user of it (the auth directory's sys
// user). Servers with a full resolver store the JWT and apply it at once:
// a revoked user is disconnected. It returns when a server has answered:
// nil when it stored the JWT, ErrPushRefused when it refused it, and
// nats.ErrNoResponders when no server takes claim updates (not in operator
// mode with a full resolver, or nc is not in the system account).
func PushAccount(ctx context.Context, nc *nats.Conn, accountJWT string) error {
	m, err := nc.RequestWithContext(ctx, ClaimsUpdateSubject, []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("push account JWT: %w", err)
	}
	return parseClaimsUpdate(m.Data)
}

// claimsUpdate is a server's answer to a claims update
// (nats-server's ServerAPIClaimUpdateResponse).
type claimsUpdate struct {
	Data *struct {
		Account string `json:"account"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"data"`
	Error *struct {
		Account     string `json:"account"`
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// parseClaimsUpdate decodes a server's answer to a claims update.
func parseClaimsUpdate(b []byte) error {
	var r claimsUpdate
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("push account JWT: the server's answer: %w", err)
	}
	switch {
	case r.Error != nil:
		return fmt.Errorf("%w: %s (%d)", ErrPushRefused, r.Error.Description, r.Error.Code)
	case r.Data == nil:
		return fmt.Errorf("push account JWT: the server's answer has no result: %.200q", b)
	}
	return nil
}
