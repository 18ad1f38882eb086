package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
)

// A rotated issuer — its files rewritten, as the kubelet does when
// cert-manager renews the issuer's Secret — is loaded without a restart:
// proxies' new certificates and the service's own chain to it. Files that
// do not load (a key that is not the new issuer's, an issuer of another
// trust anchor) leave the current issuer serving.
func TestRotatedIssuerIsLoaded(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	anchor, err := pki.GenerateTrustAnchor(meshid.DefaultTrustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	anchors, crtFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(path string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	newIssuer := func(anchor *pki.KeyPair) (crt, key []byte) {
		t.Helper()
		issuer, err := pki.GenerateIssuer(anchor, meshid.DefaultTrustDomain, 0, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		key, err = pki.EncodeKey(issuer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pki.EncodeCertificates(issuer.Cert), key
	}
	write(anchors, pki.EncodeCertificates(anchor.Cert))
	first, firstKey := newIssuer(anchor)
	write(crtFile, first)
	write(keyFile, firstKey)

	srv, client := startServer(t, func(o *Options) {
		o.TrustAnchorPEM, o.IssuerCertPEM, o.IssuerKeyPEM, o.ReloadInterval = anchors, crtFile, keyFile, 20*time.Millisecond
	})
	// issuers are what the service chains to: a proxy's certificate and its own.
	issuers := func() (proxy, own []byte) {
		t.Helper()
		resp, err := client.Certify(context.Background(), &identityv1.CertifyRequest{
			Identity: web.String(), Token: token(t, srv, web, time.Hour, time.Now()), CertificateSigningRequest: makeCSR(t, newKey(t), web, nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", srv.Addr().String(), proxyid.ClientConfig(srv.CA().AnchorPool(), meshid.IdentityServiceID(meshid.DefaultTrustDomain), nil))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return pemOf(resp.IntermediateCertificates[0]), pemOf(conn.ConnectionState().PeerCertificates[1].Raw)
	}
	eventually := func(want []byte, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			proxy, own := issuers()
			if bytes.Equal(proxy, want) && bytes.Equal(own, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the service does not issue from the expected issuer", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually(first, "at start")

	second, secondKey := newIssuer(anchor)
	write(crtFile, second) // the key is still the first issuer's
	time.Sleep(200 * time.Millisecond)
	eventually(first, "with a key that is not the new issuer's")
	write(keyFile, secondKey)
	eventually(second, "after the rotation")

	other, err := pki.GenerateTrustAnchor(meshid.DefaultTrustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, foreignKey := newIssuer(other)
	write(crtFile, foreign)
	write(keyFile, foreignKey)
	time.Sleep(200 * time.Millisecond)
	eventually(second, "with an issuer of another trust anchor")
}

func pemOf(der []byte) []byte {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	return pki.EncodeCertificates(c)
}
