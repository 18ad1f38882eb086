// Package identity defines workload identities: SPIFFE IDs of the form
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>, the name a
// proxy's certificate carries in its URI subject alternative name and the
// name policy and metrics refer to.
//
// Parsing and validation of the SPIFFE syntax is go-spiffe's spiffeid; this
// package adds the mesh's shape on top: exactly the ns/<namespace>/sa/<name>
// path, with Kubernetes naming rules for both names, in both run modes.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

// JoinTokenPrefix starts every join token, local mode's proof of identity
// (its format: internal/control/identity).
const JoinTokenPrefix = "tjt1."

// maxLen is the SPIFFE limit on a SPIFFE ID's length in bytes.
const maxLen = 2048

// ID is a workload identity. The zero value is no identity.
type ID struct {
	TrustDomain    string // e.g. cluster.local
	Namespace      string // a Kubernetes namespace name (RFC 1123 label)
	ServiceAccount string // a Kubernetes ServiceAccount name (RFC 1123 subdomain)
}

// New returns the identity of serviceAccount in namespace, validated.
func New(trustDomain, namespace, serviceAccount string) (ID, error) {
	id := ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// Parse parses a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/web.
// It accepts exactly the form String produces, so Parse(s).String() == s.
func Parse(s string) (ID, error) {
	if len(s) > maxLen {
		return ID{}, fmt.Errorf("identity is %d bytes; SPIFFE IDs are at most %d", len(s), maxLen)
	}
	sid, err := spiffeid.FromString(s)
	if err != nil {
		return ID{}, fmt.Errorf("identity %q is not a SPIFFE ID: %w", s, err)
	}
	seg := strings.Split(strings.TrimPrefix(sid.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return ID{}, fmt.Errorf("identity %q: path must be /ns/<namespace>/sa/<serviceaccount>, not %q", s, sid.Path())
	}
	id := ID{TrustDomain: sid.TrustDomain().Name(), Namespace: seg[1], ServiceAccount: seg[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("identity %q: %w", s, err)
	}
	return id, nil
}

// Validate reports what, if anything, makes id unusable.
func (id ID) Validate() error {
	if id.TrustDomain == "" {
		return errors.New("trust domain is empty")
	}
	td, err := spiffeid.TrustDomainFromString(id.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", id.TrustDomain, err)
	}
	if td.Name() != id.TrustDomain {
		return fmt.Errorf("trust domain %q: give the bare name, not a SPIFFE ID", id.TrustDomain)
	}
	if len(id.TrustDomain) > 255 {
		return fmt.Errorf("trust domain is %d bytes; at most 255", len(id.TrustDomain))
	}
	if err := dnsLabel(id.Namespace); err != nil {
		return fmt.Errorf("namespace %q: %w", id.Namespace, err)
	}
	if err := dnsSubdomain(id.ServiceAccount); err != nil {
		return fmt.Errorf("service account %q: %w", id.ServiceAccount, err)
	}
	if _, err := spiffeid.FromSegments(td, "ns", id.Namespace, "sa", id.ServiceAccount); err != nil {
		return err
	}
	if n := len(id.String()); n > maxLen {
		return fmt.Errorf("identity is %d bytes; SPIFFE IDs are at most %d", n, maxLen)
	}
	return nil
}

// TokenAudience is the audience of the ServiceAccount tokens proxies
// present in Kubernetes mode; the identity service accepts no other
// projected audience.
const TokenAudience = "identity.trellis.dev"

// CheckServiceAccount reports what, if anything, makes sa unusable as a
// service account name.
func CheckServiceAccount(sa string) error { return dnsSubdomain(sa) }

// IsZero reports whether id is the zero value (no identity).
func (id ID) IsZero() bool { return id == ID{} }

// String returns the SPIFFE ID, or "" for the zero value.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the SPIFFE ID as the URL that goes into a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; empty text is the zero ID.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = ID{}
		return nil
	}
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// FromURIs returns the identity named by a certificate's URI SANs, which must
// be exactly one SPIFFE ID of the mesh's form.
func FromURIs(uris []*url.URL) (ID, error) {
	switch len(uris) {
	case 0:
		return ID{}, errors.New("certificate has no URI SAN; a workload identity is exactly one spiffe:// URI SAN")
	case 1:
	default:
		return ID{}, fmt.Errorf("certificate has %d URI SANs; a workload identity is exactly one", len(uris))
	}
	return Parse(uris[0].String())
}

// FromCertificate returns the identity a certificate names (see FromURIs). It
// does not verify the certificate.
func FromCertificate(cert *x509.Certificate) (ID, error) { return FromURIs(cert.URIs) }

// dnsLabel checks an RFC 1123 label, the rule for Kubernetes namespace names.
func dnsLabel(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > 63:
		return fmt.Errorf("%d characters; at most 63", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("character %q at %d: only lower-case letters, digits and '-'", c, i)
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return errors.New("must start and end with a letter or digit")
	}
	return nil
}

// dnsSubdomain checks an RFC 1123 subdomain, the rule for ServiceAccount names.
func dnsSubdomain(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > 253:
		return fmt.Errorf("%d characters; at most 253", len(s))
	}
	for _, label := range strings.Split(s, ".") {
		if err := dnsLabel(label); err != nil {
			return fmt.Errorf("label %q: %w", label, err)
		}
	}
	return nil
}

// ControlPlaneNamespace is the namespace of the control plane's own identities.
const ControlPlaneNamespace = "trellis"

// IdentityServiceID is the identity the identity service presents to proxies
// in trustDomain: spiffe://<trust-domain>/ns/trellis/sa/trellis-identity.
func IdentityServiceID(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: ControlPlaneNamespace, ServiceAccount: "trellis-identity"}
}
