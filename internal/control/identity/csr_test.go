package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
)

func TestCheckCSR(t *testing.T) {
	key := newKey(t)
	if _, err := CheckCSR(makeCSR(t, key, web, nil), web); err != nil {
		t.Errorf("plain CSR: %v", err)
	}
	if _, err := CheckCSR(makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.Subject = pkix.Name{CommonName: web.String()} }), web); err != nil {
		t.Errorf("CSR whose subject is the identity: %v", err)
	}
	// Name kinds crypto/x509 does not model must be refused too.
	san := func(names ...asn1.RawValue) []byte {
		b, err := asn1.Marshal(names)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(web.String())}
	regID := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}}
	for name, tc := range map[string]struct {
		ext  []pkix.Extension
		want string
	}{
		"registeredID beside the URI": {[]pkix.Extension{{Id: oidSAN, Value: san(uri, regID)}}, "extra name (registeredID)"},
		"two SAN extensions":          {[]pkix.Extension{{Id: oidSAN, Value: san(uri)}, {Id: oidSAN, Value: san(uri)}}, "duplicate requested extensions"},
		"empty SAN":                   {[]pkix.Extension{{Id: oidSAN, Value: san()}}, "0 URI SANs"},
	} {
		der := makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.URIs = nil; r.ExtraExtensions = tc.ext })
		_, err := CheckCSR(der, web)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", name, err, tc.want)
		}
	}
}

// FuzzCheckCSR checks that CheckCSR never panics and that whatever it
// accepts is a correctly signed P-256 request naming exactly the identity.
func FuzzCheckCSR(f *testing.F) {
	key := newKey(f)
	f.Add(makeCSR(f, key, web, nil))
	f.Add(makeCSR(f, key, api, nil))
	f.Add(makeCSR(f, key, web, func(r *x509.CertificateRequest) { r.DNSNames = []string{"x"} }))
	f.Add(makeCSR(f, key, web, func(r *x509.CertificateRequest) { r.Subject = pkix.Name{CommonName: web.String()} }))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := CheckCSR(der, web)
		if err != nil {
			return
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR whose signature does not verify")
		}
		if len(csr.URIs) != 1 || csr.URIs[0].String() != web.String() || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted a CSR naming %v %v %v %v", csr.URIs, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
		}
		for _, n := range csr.Subject.Names {
			if n.Value != web.String() {
				t.Fatalf("accepted a CSR with subject %v", csr.Subject)
			}
		}
	})
}
