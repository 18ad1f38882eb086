package identity

import (
	"context"
	"errors"
	"fmt"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// Validator checks a caller's proof of identity and returns the identity it
// proves. Errors wrapping ErrInvalidToken mean the proof is no good
// (malformed, expired, signed by someone else): the caller gets
// Unauthenticated. Any other error means the proof could not be checked
// right now (the caller gets Unavailable and retries).
type Validator interface {
	Validate(ctx context.Context, token []byte) (meshid.ID, error)
}

// ErrInvalidToken marks a proof that does not prove any identity.
var ErrInvalidToken = errors.New("invalid token")

// invalid returns an error wrapping ErrInvalidToken.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}
