package identity

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// fakeReviewer is the TokenReview test double: tokens map to reviews, and
// a token valid only without an audience models a non-projected token.
type fakeReviewer struct {
	reviews map[string]TokenReview // keyed by token
	legacy  map[string]bool        // tokens valid only for the API server's default audience
	err     error
	calls   [][]string
}

func (f *fakeReviewer) Review(_ context.Context, token string, audiences []string) (TokenReview, error) {
	f.calls = append(f.calls, audiences)
	if f.err != nil {
		return TokenReview{}, f.err
	}
	r, ok := f.reviews[token]
	if !ok {
		return TokenReview{Error: "token not found"}, nil
	}
	if f.legacy[token] && len(audiences) > 0 {
		return TokenReview{Error: "token audiences invalid"}, nil
	}
	return r, nil
}

func TestServiceAccountValidator(t *testing.T) {
	f := &fakeReviewer{
		reviews: map[string]TokenReview{
			"projected": {Authenticated: true, Username: "system:serviceaccount:default:web", Audiences: []string{DefaultTokenAudience}},
			"legacy":    {Authenticated: true, Username: "system:serviceaccount:default:web"},
			"user":      {Authenticated: true, Username: "alice"},
			"wrong-aud": {Authenticated: true, Username: "system:serviceaccount:default:web", Audiences: []string{"vault"}},
			"bad-name":  {Authenticated: true, Username: "system:serviceaccount:Default:web"},
			"control":   {Authenticated: true, Username: "system:serviceaccount:trellis:trellis-identity", Audiences: []string{DefaultTokenAudience}},
		},
		legacy: map[string]bool{"legacy": true},
	}
	v := &ServiceAccountValidator{Reviewer: f, TrustDomain: "cluster.local"}
	for _, tok := range []string{"projected", "legacy"} {
		f.calls = nil
		id, err := v.Validate(context.Background(), []byte(tok))
		if err != nil || id != web {
			t.Errorf("%s: %v, %v; want %v", tok, id, err, web)
		}
		if !slices.Equal(f.calls[0], []string{DefaultTokenAudience}) {
			t.Errorf("%s: first review asked for %v", tok, f.calls[0])
		}
	}
	if len(f.calls) != 2 || f.calls[1] != nil {
		t.Errorf("legacy token: reviews %v; want the audience, then none", f.calls)
	}
	for tok, want := range map[string]string{
		"unknown":   "TokenReview refused the ServiceAccount token: token not found",
		"user":      `authenticates "alice", which is not a ServiceAccount`,
		"wrong-aud": `audiences ["vault"]`,
		"bad-name":  "namespace",
		"control":   "control plane's",
		"":          "empty ServiceAccount token",
	} {
		_, err := v.Validate(context.Background(), []byte(tok))
		if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want ErrInvalidToken containing %q", tok, err, want)
		}
	}
	f.err = errors.New("connection refused")
	_, err := v.Validate(context.Background(), []byte("projected"))
	if err == nil || errors.Is(err, ErrInvalidToken) {
		t.Errorf("API down: %v; want an error that is not ErrInvalidToken (the caller retries)", err)
	}
}
