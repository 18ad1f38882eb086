package identity

import (
	"bytes"
	"fmt"
	"os"
)

// TokenSource returns the proof of identity sent with a certificate request.
// It is called before every request, so a token that is rotated on disk is
// picked up.
type TokenSource func() ([]byte, error)

// TokenFile reads the token from path at every request (a projected
// ServiceAccount token is rewritten in place by the kubelet; a join token by
// `trellis`). Surrounding white space is removed.
func TokenFile(path string) TokenSource {
	return func() ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("identity token: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("identity token file %s is empty", path)
		}
		return b, nil
	}
}

// StaticToken always returns token, e.g. one read once from an environment
// variable at start.
func StaticToken(token []byte) TokenSource {
	token = bytes.TrimSpace(token)
	return func() ([]byte, error) {
		if len(token) == 0 {
			return nil, fmt.Errorf("identity token is empty")
		}
		return token, nil
	}
}
