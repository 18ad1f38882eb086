package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustAnchor(t *testing.T) *KeyPair {
	t.Helper()
	a, err := GenerateTrustAnchor("cluster.local", 0, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustIssuer(t *testing.T, anchor *KeyPair) *KeyPair {
	t.Helper()
	i, err := GenerateIssuer(anchor, "cluster.local", 0, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// mkCA signs a CA certificate from tmpl with parent (self-signed if nil),
// after edit has changed the template.
func mkCA(t *testing.T, cn string, parent *KeyPair, edit func(*x509.Certificate)) *KeyPair {
	t.Helper()
	tmpl := caTemplate(cn, now.Add(-time.Hour), 24*time.Hour)
	if edit != nil {
		edit(tmpl)
	}
	kp, err := signCA(tmpl, parent)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func certs(kps ...*KeyPair) []*x509.Certificate {
	var cs []*x509.Certificate
	for _, k := range kps {
		cs = append(cs, k.Cert)
	}
	return cs
}

func TestNewCAValidation(t *testing.T) {
	anchor := mustAnchor(t)
	issuer := mustIssuer(t, anchor)
	otherAnchor := mustAnchor(t) // same name, different key
	foreignAnchor := mkCA(t, "someone-else", nil, nil)
	mid := mkCA(t, "mid", anchor, nil)
	belowMid := mkCA(t, "below-mid", mid, nil)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	for _, tc := range []struct {
		name    string
		anchors []*x509.Certificate
		chain   []*x509.Certificate
		key     crypto.Signer
		want    string // "" means accepted
	}{
		{"generated hierarchy", certs(anchor), certs(issuer), issuer.Key, ""},
		{"issuer under an intermediate, chain given", certs(anchor), certs(belowMid, mid), belowMid.Key, ""},
		{"several anchors, one matches", certs(foreignAnchor, anchor), certs(issuer), issuer.Key, ""},
		{"no anchors", nil, certs(issuer), issuer.Key, "no trust anchor certificate"},
		{"no issuer", certs(anchor), nil, issuer.Key, "no issuer certificate"},
		{"no key", certs(anchor), certs(issuer), nil, "no issuer key"},
		{"issuer signed by a foreign anchor", certs(foreignAnchor), certs(issuer), issuer.Key,
			`is not signed by the trust anchor: it was issued by "CN=root.trellis.cluster.local,O=Trellis", but the trust anchor is "CN=someone-else,O=Trellis"`},
		{"issuer signed by another anchor of the same name", certs(otherAnchor), certs(issuer), issuer.Key, "same name, different key"},
		{"intermediate missing from chain", certs(anchor), certs(belowMid), belowMid.Key, `is not signed by the trust anchor: it was issued by "CN=mid,O=Trellis"`},
		{"chain ending elsewhere", certs(foreignAnchor), certs(belowMid, mid), belowMid.Key, `its chain ends at "CN=mid,O=Trellis"`},
		{"issuer key does not match", certs(anchor), certs(issuer), otherKey, "issuer key does not match issuer certificate"},
		{"issuer key is the anchor's", certs(anchor), certs(issuer), anchor.Key, "issuer key does not match"},
		{"expired issuer", certs(anchor), certs(mkCA(t, "old", anchor, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Minute)
		})), nil, `issuer certificate "CN=old,O=Trellis" (serial `},
		{"not-yet-valid issuer", certs(anchor), certs(mkCA(t, "future", anchor, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(time.Hour), now.Add(48*time.Hour)
		})), nil, "is not valid yet: valid from 2026-03-01T13:00:00Z, 1h0m0s from now"},
		{"expired anchor", certs(mkCA(t, "old-root", nil, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Second)
		})), certs(issuer), issuer.Key, "trust anchor 1 of 1 certificate \"CN=old-root,O=Trellis\""},
		{"issuer not a CA", certs(anchor), certs(mkCA(t, "leafy", anchor, func(c *x509.Certificate) {
			c.IsCA = false
		})), nil, "is not a CA certificate: its basic constraints do not say CA:TRUE"},
		{"issuer without basic constraints", certs(anchor), certs(mkCA(t, "nobc", anchor, func(c *x509.Certificate) {
			c.IsCA, c.BasicConstraintsValid = false, false
		})), nil, "is not a CA certificate"},
		{"issuer without certificate signing", certs(anchor), certs(mkCA(t, "nosign", anchor, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageDigitalSignature
		})), nil, "may not sign certificates: its key usage lacks Certificate Sign (keyCertSign)"},
		{"anchor without certificate signing", certs(mkCA(t, "root-nosign", nil, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageDigitalSignature
		})), certs(issuer), issuer.Key, "trust anchor 1 of 1 certificate \"CN=root-nosign,O=Trellis\""},
		{"expired intermediate in chain", certs(anchor), certs(belowMid, mkCA(t, "old-mid", anchor, func(c *x509.Certificate) {
			c.NotAfter = now.Add(-time.Second)
		})), belowMid.Key, "intermediate 1 after the issuer certificate \"CN=old-mid,O=Trellis\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == nil && len(tc.chain) > 0 && tc.name != "no key" {
				key = otherKey // the check under test comes before the key check
			}
			ca, err := NewCA(tc.anchors, tc.chain, key, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if ca.Anchor() == nil || len(ca.Chain()) != len(tc.chain) {
					t.Fatalf("chain %d certificates; want %d", len(ca.Chain()), len(tc.chain))
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func csrFor(t *testing.T, key crypto.Signer, edit func(*x509.CertificateRequest)) *x509.CertificateRequest {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestIssue(t *testing.T) {
	anchor := mustAnchor(t)
	issuer := mustIssuer(t, anchor)
	ca, err := NewCA(certs(anchor), certs(issuer), issuer.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// SANs in the CSR are not copied: the leaf names only id.
	csr := csrFor(t, key, func(r *x509.CertificateRequest) { r.DNSNames = []string{"evil.example"} })

	leaf, err := ca.Issue(csr, id, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := leaf.NotAfter.Sub(now); got != DefaultLeafLifetime {
		t.Errorf("lifetime %v; want %v", got, DefaultLeafLifetime)
	}
	if got := now.Sub(leaf.NotBefore); got != ClockSkewAllowance {
		t.Errorf("NotBefore %v before now; want %v", got, ClockSkewAllowance)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("names: URIs %v DNS %v IP %v email %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA %v, key usage %v", leaf.IsCA, leaf.KeyUsage)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("leaf does not carry the CSR's key")
	}
	inter := x509.NewCertPool()
	for _, der := range ca.Chain() {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.AnchorPool(), Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("leaf does not verify for %v: %v", usage, err)
		}
	}

	custom, err := ca.Issue(csr, id, 3*time.Second, now)
	if err != nil || custom.NotAfter.Sub(now) != 3*time.Second {
		t.Errorf("3s lifetime: %v, %v", custom.NotAfter.Sub(now), err)
	}
	// Never beyond the issuer.
	late := issuer.Cert.NotAfter.Add(-time.Hour)
	clamped, err := ca.Issue(csr, id, 0, late)
	if err != nil || !clamped.NotAfter.Equal(issuer.Cert.NotAfter) {
		t.Errorf("near issuer expiry: NotAfter %v, want %v (%v)", clamped.NotAfter, issuer.Cert.NotAfter, err)
	}
	if _, err := ca.Issue(csr, id, 0, issuer.Cert.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "hierarchy expired at") {
		t.Errorf("after issuer expiry: %v", err)
	}
}

func TestIssueRefusesBadRequests(t *testing.T) {
	anchor := mustAnchor(t)
	issuer := mustIssuer(t, anchor)
	ca, _ := NewCA(certs(anchor), certs(issuer), issuer.Key, now)
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := ca.Issue(csrFor(t, p384, nil), id, 0, now); err == nil || !strings.Contains(err.Error(), "key is ECDSA P-384; leaf keys must be ECDSA P-256") {
		t.Errorf("P-384: %v", err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := ca.Issue(csrFor(t, edKey, nil), id, 0, now); err == nil || !strings.Contains(err.Error(), "key is Ed25519") {
		t.Errorf("Ed25519: %v", err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := csrFor(t, p256, nil)
	forged.Signature[len(forged.Signature)-1] ^= 1
	if _, err := ca.Issue(forged, id, 0, now); err == nil || !strings.Contains(err.Error(), "CSR signature") {
		t.Errorf("bad signature: %v", err)
	}
	if _, err := ca.Issue(csrFor(t, p256, nil), identity.ID{TrustDomain: "cluster.local"}, 0, now); err == nil {
		t.Error("invalid identity accepted")
	}
}

func TestParse(t *testing.T) {
	anchor := mustAnchor(t)
	pemCerts := EncodeCertificates(anchor.Cert, anchor.Cert)
	if cs, err := ParseCertificates(pemCerts); err != nil || len(cs) != 2 {
		t.Errorf("two certificates: %d, %v", len(cs), err)
	}
	keyPEM, _ := EncodeKey(anchor.Key)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM CERTIFICATE block"},
		{"key instead of certificate", keyPEM, `PEM block 1 is "PRIVATE KEY", not CERTIFICATE`},
		{"trailing garbage", append(EncodeCertificates(anchor.Cert), "junk"...), "unexpected data after PEM block 1"},
		{"corrupt DER", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "PEM block 1:"},
	} {
		if _, err := ParseCertificates(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
	k, err := ParseKey(keyPEM)
	if err != nil || !anchor.Key.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Errorf("key round trip: %v", err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(anchor.Key.(*ecdsa.PrivateKey))
	if _, err := ParseKey(append([]byte("-----BEGIN EC PRIVATE KEY-----\n"), []byte(b64(ecDER)+"\n-----END EC PRIVATE KEY-----\n")...)); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}
	if _, err := ParseKey(pemCerts); err == nil || !strings.Contains(err.Error(), "more than one PEM block") {
		t.Errorf("two blocks: %v", err)
	}
	if _, err := ParseKey(EncodeCertificates(anchor.Cert)); err == nil || !strings.Contains(err.Error(), `PEM block is "CERTIFICATE", not a private key`) {
		t.Errorf("certificate as key: %v", err)
	}
}

func TestLoadOrCreateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	ca, created, err := LoadOrCreateDir(dir, "example.org", now)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	if cn := ca.Anchor().Subject.CommonName; cn != "root.trellis.example.org" {
		t.Errorf("anchor CN %q", cn)
	}
	if got := ca.Issuer().NotAfter.Sub(now); got != DefaultIssuerLifetime {
		t.Errorf("issuer lifetime %v", got)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", st.Mode().Perm())
	}
	for name, mode := range map[string]os.FileMode{AnchorFile: 0o644, AnchorKeyFile: 0o600, IssuerFile: 0o644, IssuerKeyFile: 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %v", name, st.Mode().Perm(), err, mode)
		}
	}
	again, created, err := LoadOrCreateDir(dir, "example.org", now.Add(time.Hour))
	if err != nil || created || !again.Issuer().Equal(ca.Issuer()) {
		t.Fatalf("second start: created %v, same issuer %v, %v", created, err == nil && again.Issuer().Equal(ca.Issuer()), err)
	}
	// An expired hierarchy is refused on load, naming the file.
	if _, _, err := LoadOrCreateDir(dir, "example.org", now.Add(400*24*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), AnchorFile) {
		t.Errorf("expired: %v", err)
	}
	os.Remove(filepath.Join(dir, IssuerKeyFile))
	if _, _, err := LoadOrCreateDir(dir, "example.org", now); err == nil || !strings.Contains(err.Error(), "is incomplete") || !strings.Contains(err.Error(), "but not "+IssuerKeyFile) {
		t.Errorf("incomplete: %v", err)
	}
}

func TestLoadFilesNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	anchor := mustAnchor(t)
	issuer := mustIssuer(t, anchor)
	keyPEM, _ := EncodeKey(issuer.Key)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.pem", EncodeCertificates(anchor.Cert))
	i := write("i.pem", EncodeCertificates(issuer.Cert))
	k := write("k.pem", keyPEM)
	if _, err := LoadFiles(a, i, k, now); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFiles(a, k, k, now); err == nil || !strings.Contains(err.Error(), "issuer certificate file "+k) {
		t.Errorf("key as certificate: %v", err)
	}
	if _, err := LoadFiles(a, i, i, now); err == nil || !strings.Contains(err.Error(), "issuer key file "+i) {
		t.Errorf("certificate as key: %v", err)
	}
	if _, err := LoadFiles(filepath.Join(dir, "nope"), i, k, now); err == nil || !strings.Contains(err.Error(), "trust anchor:") {
		t.Errorf("missing anchor: %v", err)
	}
	if _, err := LoadFiles("", i, k, now); err == nil || !strings.Contains(err.Error(), "no trust anchor file given") {
		t.Errorf("no anchor: %v", err)
	}
	other := mustAnchor(t)
	o := write("o.pem", EncodeCertificates(other.Cert))
	if _, err := LoadFiles(o, i, k, now); err == nil || !strings.Contains(err.Error(), "not signed by the trust anchor") || !strings.Contains(err.Error(), o) {
		t.Errorf("foreign anchor: %v", err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
