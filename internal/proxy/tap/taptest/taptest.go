// Package taptest helps tests of tapping: a real certificate hierarchy
// issuing mesh leaf certificates, and real tap servers on loopback that
// serve with them.
package taptest

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
)

// TrustDomain is the trust domain of the identities tests use.
const TrustDomain = identity.DefaultTrustDomain

// ControlPlane is the control plane's identity, the one tap servers admit
// by default.
var ControlPlane = identity.IdentityServiceID(TrustDomain)

// ID returns the identity of serviceAccount in namespace.
func ID(t testing.TB, namespace, serviceAccount string) identity.ID {
	t.Helper()
	id, err := identity.New(TrustDomain, namespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// PKI is a trust anchor and an issuer, as the identity service has.
type PKI struct {
	CA *pki.CA
}

// NewPKI generates a fresh hierarchy.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	now := time.Now()
	anchor, err := pki.GenerateTrustAnchor(TrustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := pki.GenerateIssuer(anchor, TrustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA([]*x509.Certificate{anchor.Cert}, []*x509.Certificate{issuer.Cert}, issuer.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca}
}

// Anchors is the pool peers are verified against.
func (p *PKI) Anchors() *x509.CertPool { return p.CA.AnchorPool() }

// Cert issues a leaf certificate for id, served with its issuer.
func (p *PKI) Cert(t testing.TB, id identity.ID) *tls.Certificate {
	t.Helper()
	cert, err := p.CA.IssueTLS(id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Creds are a proxy's credentials for id, built the way the proxy builds
// them (internal/proxy/identity's ServerConfig).
func (p *PKI) Creds(t testing.TB, id identity.ID) tap.Credentials {
	t.Helper()
	return creds{anchors: p.Anchors(), cert: p.Cert(t, id)}
}

type creds struct {
	anchors *x509.CertPool
	cert    *tls.Certificate
}

func (c creds) ServerConfig() *tls.Config {
	return proxyid.ServerConfig(c.anchors, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert, nil })
}

// StartServer serves hub's tap service on a loopback port as the proxy id,
// admitting allowed, until the test ends; it returns the address.
func StartServer(t testing.TB, p *PKI, hub *tap.Hub, id, allowed identity.ID) string {
	t.Helper()
	srv, err := tap.NewServer(hub, p.Creds(t, id), allowed, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("tap server: %v", err)
		}
	})
	return ln.Addr().String()
}
