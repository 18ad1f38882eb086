package identity

import (
	"context"
	"fmt"
	"slices"
	"strings"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultTokenAudience is the audience proxies request for the projected
// ServiceAccount token they present in Kubernetes mode.
const DefaultTokenAudience = meshid.TokenAudience

// TokenReviewer is the part of the Kubernetes TokenReview API (a
// authentication.k8s.io/v1 TokenReview create) the ServiceAccount validator
// needs; internal/kube/auth implements it with the Kubernetes API.
type TokenReviewer interface {
	// Review asks the API server whether token is valid for any of audiences
	// (the API server's own audiences if empty). An error means the review
	// could not be made, not that the token is bad.
	Review(ctx context.Context, token string, audiences []string) (TokenReview, error)
}

// TokenReview is a TokenReview's status.
type TokenReview struct {
	Authenticated bool
	Username      string   // system:serviceaccount:<namespace>:<name> for ServiceAccount tokens
	Audiences     []string // the audiences the token is valid for
	Error         string   // why the token was not authenticated
}

// ServiceAccountValidator accepts Kubernetes ServiceAccount tokens, checked
// with TokenReview: a token for ServiceAccount sa in namespace ns proves
// spiffe://<TrustDomain>/ns/<ns>/sa/<sa>. Like Linkerd it asks for Audience
// first and, if the token is not valid for it, falls back to the API
// server's default audiences, which non-projected tokens carry.
type ServiceAccountValidator struct {
	Reviewer    TokenReviewer
	TrustDomain string
	Audience    string // DefaultTokenAudience if empty
}

// Validate implements Validator.
func (v *ServiceAccountValidator) Validate(ctx context.Context, token []byte) (meshid.ID, error) {
	if len(token) == 0 {
		return meshid.ID{}, invalid("empty ServiceAccount token")
	}
	aud := v.Audience
	if aud == "" {
		aud = DefaultTokenAudience
	}
	r, err := v.Reviewer.Review(ctx, string(token), []string{aud})
	if err != nil {
		return meshid.ID{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !r.Authenticated {
		first := r.Error
		if r, err = v.Reviewer.Review(ctx, string(token), nil); err != nil {
			return meshid.ID{}, fmt.Errorf("TokenReview: %w", err)
		}
		if !r.Authenticated && first != "" {
			r.Error = first // why it failed for our audience says more
		}
	} else if len(r.Audiences) > 0 && !slices.Contains(r.Audiences, aud) {
		return meshid.ID{}, invalid("ServiceAccount token is for audiences %q, not %q", r.Audiences, aud)
	}
	if !r.Authenticated {
		reason := r.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return meshid.ID{}, invalid("TokenReview refused the ServiceAccount token: %s", reason)
	}
	rest, ok := strings.CutPrefix(r.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return meshid.ID{}, invalid("token authenticates %q, which is not a ServiceAccount", r.Username)
	}
	id, err := meshid.New(v.TrustDomain, ns, sa)
	if err != nil {
		return meshid.ID{}, invalid("token's ServiceAccount %q: %v", r.Username, err)
	}
	if ns == meshid.ControlPlaneNamespace {
		// Proxies trust these identities as their identity and discovery
		// service and their tap client: no Pod token may give one.
		return meshid.ID{}, invalid("ServiceAccount %s/%s: identities of namespace %s are the control plane's; no ServiceAccount token gives one", ns, sa, ns)
	}
	return id, nil
}
