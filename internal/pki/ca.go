package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// CA is a validated hierarchy that issues leaf certificates.
type CA struct {
	anchors []*x509.Certificate
	issuer  KeyPair
	chain   []*x509.Certificate // issuer first, then any intermediates above it; no anchor
	pool    *x509.CertPool
	// notAfter is when the hierarchy stops being able to vouch for a leaf:
	// the earliest NotAfter along the issuer's verified chain, anchor included.
	notAfter time.Time
	anchor   *x509.Certificate // the anchor the issuer chains to
}

// NewCA validates a hierarchy at time now and returns a CA for it.
//
// chain is the issuer certificate first, optionally followed by the
// intermediates between it and a trust anchor; key is the issuer's private
// key. It refuses, naming the certificate and the fault: a certificate that
// is expired or not yet valid, a CA certificate without the CA basic
// constraint or the certificate-signing key usage, an issuer key that does
// not match the issuer certificate, and an issuer that does not chain to one
// of anchors.
func NewCA(anchors, chain []*x509.Certificate, key crypto.Signer, now time.Time) (*CA, error) {
	if len(anchors) == 0 {
		return nil, errors.New("no trust anchor certificate given")
	}
	if len(chain) == 0 {
		return nil, errors.New("no issuer certificate given")
	}
	if key == nil {
		return nil, errors.New("no issuer key given")
	}
	pool := x509.NewCertPool()
	for i, a := range anchors {
		if err := checkCA(fmt.Sprintf("trust anchor %d of %d", i+1, len(anchors)), a, now); err != nil {
			return nil, err
		}
		pool.AddCert(a)
	}
	issuer := chain[0]
	if err := checkCA("issuer", issuer, now); err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for i, c := range chain[1:] {
		if err := checkCA(fmt.Sprintf("intermediate %d after the issuer", i+1), c, now); err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	if err := checkKey(issuer, key); err != nil {
		return nil, err
	}
	chains, err := issuer.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return nil, notSignedByAnchor(issuer, chain, anchors)
		}
		return nil, fmt.Errorf("issuer %s does not chain to the trust anchor: %w", describe(issuer), err)
	}
	verified := chains[0] // issuer, intermediates…, anchor
	ca := &CA{
		anchors:  anchors,
		issuer:   KeyPair{Cert: issuer, Key: key},
		chain:    verified[:len(verified)-1],
		pool:     pool,
		anchor:   verified[len(verified)-1],
		notAfter: issuer.NotAfter,
	}
	for _, c := range verified {
		if c.NotAfter.Before(ca.notAfter) {
			ca.notAfter = c.NotAfter
		}
	}
	return ca, nil
}

// checkCA checks that c is currently valid and may sign certificates.
func checkCA(role string, c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s certificate %s is not valid yet: valid from %s, %s from now (check the clock, or wait)",
			role, describe(c), c.NotBefore.UTC().Format(time.RFC3339), c.NotBefore.Sub(now).Round(time.Second))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s certificate %s expired at %s, %s ago; issue a new one",
			role, describe(c), c.NotAfter.UTC().Format(time.RFC3339), now.Sub(c.NotAfter).Round(time.Second))
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("%s certificate %s is not a CA certificate: its basic constraints do not say CA:TRUE", role, describe(c))
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s certificate %s may not sign certificates: its key usage lacks Certificate Sign (keyCertSign)", role, describe(c))
	}
	return nil
}

// checkKey checks that key is the private key of cert.
func checkKey(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return fmt.Errorf("issuer certificate %s has an unsupported public key (%s)", describe(cert), describeKey(cert.PublicKey))
	}
	if !pub.Equal(key.Public()) {
		return fmt.Errorf("issuer key does not match issuer certificate %s: the certificate holds a %s public key that is not the key's (%s); give the key the certificate was issued for",
			describe(cert), describeKey(cert.PublicKey), describeKey(key.Public()))
	}
	return nil
}

func notSignedByAnchor(issuer *x509.Certificate, chain, anchors []*x509.Certificate) error {
	top := chain[len(chain)-1]
	names := make([]string, len(anchors))
	sameName := false
	for i, a := range anchors {
		names[i] = describe(a)
		if a.Subject.String() == top.Issuer.String() {
			sameName = true
		}
	}
	msg := fmt.Sprintf("issuer %s is not signed by the trust anchor: it was issued by %q", describe(issuer), issuer.Issuer.String())
	if len(chain) > 1 {
		msg = fmt.Sprintf("issuer %s is not signed by the trust anchor: its chain ends at %s, which was issued by %q", describe(issuer), describe(top), top.Issuer.String())
	}
	msg += fmt.Sprintf(", but the trust anchor is %s", strings.Join(names, " or "))
	if sameName {
		msg += " (same name, different key: the issuer was signed by another anchor with that name)"
	}
	return errors.New(msg)
}

// Anchors returns the trust anchors.
func (ca *CA) Anchors() []*x509.Certificate { return ca.anchors }

// AnchorPool returns the trust anchors as a pool for verification.
func (ca *CA) AnchorPool() *x509.CertPool { return ca.pool }

// Issuer returns the issuer certificate.
func (ca *CA) Issuer() *x509.Certificate { return ca.issuer.Cert }

// Anchor returns the trust anchor the issuer chains to.
func (ca *CA) Anchor() *x509.Certificate { return ca.anchor }

// Chain returns the DER certificates a leaf is served with: the issuer first,
// then the intermediates above it, without the anchor.
func (ca *CA) Chain() [][]byte {
	ders := make([][]byte, len(ca.chain))
	for i, c := range ca.chain {
		ders[i] = c.Raw
	}
	return ders
}

// NotAfter is when the CA stops being able to vouch for any leaf: the
// earliest expiry of the issuer and the certificates above it.
func (ca *CA) NotAfter() time.Time { return ca.notAfter }

// Issue signs a leaf certificate for id with the public key of csr, whose
// signature it checks. Nothing else is taken from the CSR: callers check that
// it asks for exactly id. The leaf is valid from now minus the clock-skew
// allowance for lifetime (DefaultLeafLifetime if zero), but never beyond
// NotAfter; its only name is id as a URI SAN; it may be used for TLS server
// and client authentication with a P-256 ECDSA key.
func (ca *CA) Issue(csr *x509.CertificateRequest, id identity.ID, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	if err := CheckLeafKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	if !now.Before(ca.notAfter) {
		return nil, fmt.Errorf("issuer %s cannot sign: the hierarchy expired at %s", describe(ca.issuer.Cert), ca.notAfter.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-ClockSkewAllowance)
	if notBefore.Before(ca.issuer.Cert.NotBefore) {
		notBefore = ca.issuer.Cert.NotBefore
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.notAfter) {
		notAfter = ca.notAfter
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuer.Cert, csr.PublicKey, ca.issuer.Key)
	if err != nil {
		return nil, fmt.Errorf("signing leaf for %s: %w", id, err)
	}
	return x509.ParseCertificate(der)
}

// IssueTLS generates a key and issues a leaf for id with it (see Issue):
// a certificate the issuing process presents itself, with its chain.
func (ca *CA) IssueTLS(id identity.ID, lifetime time.Duration, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue(csr, id, lifetime, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: append([][]byte{leaf.Raw}, ca.Chain()...), PrivateKey: key, Leaf: leaf}, nil
}

// CheckLeafKey checks that pub is the kind of key leaves carry: ECDSA P-256.
func CheckLeafKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("key is %s; leaf keys must be ECDSA P-256", describeKey(pub))
	}
	return nil
}
