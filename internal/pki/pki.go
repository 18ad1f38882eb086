// Package pki is the mesh's certificate hierarchy: a trust anchor (root)
// signs an issuer (intermediate), which signs the short-lived leaf
// certificates that name workload identities.
//
// It generates anchors and issuers (ECDSA P-256, one year), loads
// user-supplied PEM files, refuses — saying exactly what is wrong — a
// hierarchy that would fail at run time (an issuer not signed by the anchor,
// an expired or not-yet-valid certificate, a key that does not match its
// certificate, a CA certificate that may not sign certificates), and issues
// leaves from certificate signing requests. Time is always passed in.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Defaults of the hierarchy, as in Linkerd: a one-year anchor and issuer and
// a 24-hour leaf, backdated by the clock-skew allowance.
const (
	DefaultAnchorLifetime = 365 * 24 * time.Hour
	DefaultIssuerLifetime = 365 * 24 * time.Hour
	DefaultLeafLifetime   = 24 * time.Hour
	// ClockSkewAllowance backdates a leaf's NotBefore so that a peer whose
	// clock is slightly behind still accepts it.
	ClockSkewAllowance = 20 * time.Second
)

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// GenerateTrustAnchor creates a self-signed ECDSA P-256 root valid from now
// for lifetime (DefaultAnchorLifetime if zero).
func GenerateTrustAnchor(trustDomain string, lifetime time.Duration, now time.Time) (*KeyPair, error) {
	if lifetime <= 0 {
		lifetime = DefaultAnchorLifetime
	}
	tmpl := caTemplate("root.trellis."+trustDomain, now, lifetime)
	tmpl.MaxPathLen = 1
	return signCA(tmpl, nil)
}

// GenerateIssuer creates an ECDSA P-256 intermediate signed by anchor, valid
// from now for lifetime (DefaultIssuerLifetime if zero), that may sign leaves
// only. Its NotAfter is not later than the anchor's.
func GenerateIssuer(anchor *KeyPair, trustDomain string, lifetime time.Duration, now time.Time) (*KeyPair, error) {
	if lifetime <= 0 {
		lifetime = DefaultIssuerLifetime
	}
	tmpl := caTemplate("issuer.trellis."+trustDomain, now, lifetime)
	if tmpl.NotAfter.After(anchor.Cert.NotAfter) {
		tmpl.NotAfter = anchor.Cert.NotAfter
	}
	tmpl.MaxPathLen = 0
	tmpl.MaxPathLenZero = true
	return signCA(tmpl, anchor)
}

func caTemplate(cn string, now time.Time, lifetime time.Duration) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Trellis"}},
		NotBefore:             now.Add(-ClockSkewAllowance),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// signCA generates a key for tmpl and signs it with parent (self-signed if nil).
func signCA(tmpl *x509.Certificate, parent *KeyPair) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	parentCert, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		parentCert, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// serial returns a random positive 128-bit serial number.
func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// EncodeCertificates returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// EncodeKey returns key as a PEM PRIVATE KEY (PKCS #8) block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificates parses every CERTIFICATE block in PEM data, in order. It
// refuses data with no certificate, with other blocks, or with trailing
// garbage, so a wrong file is not silently half-read.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i := 1; ; i++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not CERTIFICATE", i, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	if strings.TrimSpace(string(data)) != "" {
		return nil, fmt.Errorf("unexpected data after PEM block %d", len(certs))
	}
	return certs, nil
}

// ParseKey parses one PEM private key: PKCS #8 ("PRIVATE KEY"), SEC 1
// ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY").
func ParseKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block found")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("more than one PEM block; give exactly one private key")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, not a private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Type, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T keys cannot sign", key)
	}
	return s, nil
}

// describe names a certificate in messages.
func describe(c *x509.Certificate) string {
	name := c.Subject.String()
	if name == "" {
		name = "<empty subject>"
	}
	return fmt.Sprintf("%q (serial %x)", name, c.SerialNumber)
}

// describeKey names a public key's algorithm and size in messages.
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}
