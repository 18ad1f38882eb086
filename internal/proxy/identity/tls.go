package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// ServerConfig returns the TLS configuration of a proxy's accepting side:
// TLS 1.3 only, presenting the certificate getCert returns, requiring a
// client certificate that chains to anchors, is valid now, may be used for
// client authentication, and names exactly one workload identity. After the
// handshake PeerID returns that identity. The caller sets NextProtos (ALPN).
func ServerConfig(anchors *x509.CertPool, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	clients := newVerifier(anchors, x509.ExtKeyUsageClientAuth)
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		MaxVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		ClientAuth:     tls.RequireAnyClientCert,
		// Verification is done here, not by ClientCAs, so that resumed
		// sessions are checked again (expiry) and the identity is checked in
		// the same place as the chain.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := clients.verify(cs.PeerCertificates, time.Now())
			if err != nil {
				return fmt.Errorf("client certificate refused: %w", err)
			}
			return nil
		},
	}
}

// ClientConfig returns the TLS configuration of a proxy's connecting side:
// TLS 1.3 only, presenting the certificate getCert returns (none if nil),
// and accepting only a server whose certificate chains to anchors, is valid
// now, may be used for server authentication, and names exactly expected.
// Build it once per peer identity, not per connection. The caller sets
// NextProtos (ALPN) and, if it wants, ServerName (SNI).
func ClientConfig(anchors *x509.CertPool, expected meshid.ID, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	servers := newVerifier(anchors, x509.ExtKeyUsageServerAuth)
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		MaxVersion:           tls.VersionTLS13,
		GetClientCertificate: getCert,
		// The peer is named by a URI SAN, which crypto/tls does not check;
		// VerifyConnection verifies the chain and the name instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := servers.verify(cs.PeerCertificates, time.Now())
			if err != nil {
				return fmt.Errorf("server certificate refused: %w", err)
			}
			if got != expected {
				return fmt.Errorf("server certificate refused: it is for %s, not the expected %s", got, expected)
			}
			return nil
		},
	}
}

// VerifyPeer verifies a peer's certificate chain (leaf first, as sent)
// against anchors at now, for usage, and returns the workload identity its
// leaf names.
func VerifyPeer(anchors *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (meshid.ID, error) {
	id, _, err := verifyPeer(anchors, chain, usage, now)
	return id, err
}

// verifyPeer is VerifyPeer, also returning the chain it verified (leaf
// first, to an anchor).
func verifyPeer(anchors *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (meshid.ID, []*x509.Certificate, error) {
	if len(chain) == 0 {
		return meshid.ID{}, nil, errors.New("no certificate presented")
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	verified, err := leaf.Verify(x509.VerifyOptions{
		Roots:         anchors,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return meshid.ID{}, nil, err
	}
	id, err := meshid.FromCertificate(leaf)
	return id, verified[0], err
}

// PeerID returns the workload identity of the peer of a connection
// established with ServerConfig or ClientConfig (whose verification has
// already run), or an error if the peer presented no certificate.
func PeerID(cs tls.ConnectionState) (meshid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return meshid.ID{}, errors.New("peer presented no certificate")
	}
	return meshid.FromCertificate(cs.PeerCertificates[0])
}
