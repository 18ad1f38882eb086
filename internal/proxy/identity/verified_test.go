package identity

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestVerifierRemembersOnlyWhatItVerified(t *testing.T) {
	c := startControl(t, time.Hour)
	other := startControl(t, time.Hour) // another trust anchor
	v := newVerifier(c.srv.CA().AnchorPool(), x509.ExtKeyUsageClientAuth)
	now := time.Now()
	good := staticCert(t, c, web, now, time.Hour)
	chain := certs(t, good.Certificate)

	for i := range 2 { // verified, then remembered
		if id, err := v.verify(chain, now); err != nil || id != web {
			t.Fatalf("verify #%d: %v, %v; want %v", i+1, id, err, web)
		}
	}
	if len(v.known) != 1 {
		t.Fatalf("%d chains remembered, want 1", len(v.known))
	}
	// Remembered, but past the leaf's validity: refused.
	if _, err := v.verify(chain, now.Add(2*time.Hour)); err == nil {
		t.Error("a remembered chain was accepted after its leaf expired")
	}
	if _, err := v.verify(chain, now.Add(-time.Hour)); err == nil {
		t.Error("a remembered chain was accepted before its leaf was valid")
	}
	// The same identity from another anchor is another chain: refused.
	foreign := certs(t, staticCert(t, other, web, now, time.Hour).Certificate)
	if _, err := v.verify(foreign, now); err == nil {
		t.Error("a chain to another anchor was accepted")
	}
	// A remembered leaf with another chain behind it is verified again,
	// and without its own issuer it no longer reaches the anchor.
	mixed := append([]*x509.Certificate{chain[0]}, foreign[1:]...)
	if _, err := v.verify(mixed, now); err == nil {
		t.Error("a remembered leaf was accepted with another issuer behind it")
	}
	if len(v.known) != 1 {
		t.Errorf("%d chains remembered, want 1 (refused ones are not)", len(v.known))
	}
}

func certs(t *testing.T, der [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, b := range der {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}
