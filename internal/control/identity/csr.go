package identity

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// maxCSRLen bounds the CSRs CheckCSR parses; a P-256 CSR is about 300 bytes.
const maxCSRLen = 8192

var (
	oidSAN        = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}
)

// generalNameKinds are the GeneralName CHOICE tags (RFC 5280 §4.2.1.6).
var generalNameKinds = map[int]string{
	0: "otherName", 1: "email (rfc822Name)", 2: "DNS", 3: "x400Address", 4: "directoryName",
	5: "ediPartyName", 6: "URI", 7: "IP", 8: "registeredID",
}

// CheckCSR parses a DER certificate signing request and checks that it asks
// for exactly want and nothing else: its signature verifies, its key is
// ECDSA P-256, its only subject alternative name is want's URI (no DNS, IP,
// email or other names, and no second URI), and its subject is empty or a
// common name equal to want.
func CheckCSR(der []byte, want meshid.ID) (*x509.CertificateRequest, error) {
	switch {
	case len(der) == 0:
		return nil, errors.New("no certificate signing request")
	case len(der) > maxCSRLen:
		return nil, fmt.Errorf("certificate signing request is %d bytes; at most %d", len(der), maxCSRLen)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate signing request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate signing request signature does not verify: %w", err)
	}
	if err := pki.CheckLeafKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate signing request: %w", err)
	}
	if err := checkSANs(csr); err != nil {
		return nil, fmt.Errorf("certificate signing request: %w", err)
	}
	if got := csr.URIs[0].String(); got != want.String() {
		return nil, fmt.Errorf("certificate signing request names %q, not the requested identity %q", got, want)
	}
	for _, n := range csr.Subject.Names {
		if !n.Type.Equal(oidCommonName) || n.Value != want.String() {
			return nil, fmt.Errorf("certificate signing request subject %q claims more than the requested identity; leave the subject empty", csr.Subject.String())
		}
	}
	return csr, nil
}

// checkSANs reads the raw subjectAltName extension, since x509 ignores name
// kinds it does not model (otherName, directoryName, …), and requires exactly
// one name, a URI.
func checkSANs(csr *x509.CertificateRequest) error {
	var names []int
	exts := 0
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidSAN) {
			continue
		}
		exts++
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return errors.New("malformed subject alternative name extension")
		}
		for data := seq.Bytes; len(data) > 0; {
			var gn asn1.RawValue
			if data, err = asn1.Unmarshal(data, &gn); err != nil || gn.Class != asn1.ClassContextSpecific {
				return errors.New("malformed subject alternative name")
			}
			names = append(names, gn.Tag)
		}
	}
	switch {
	case exts == 0:
		return errors.New("no subject alternative name; it must carry the identity as its only URI SAN")
	case exts > 1:
		return fmt.Errorf("%d subject alternative name extensions; want one", exts)
	}
	for _, tag := range names {
		if tag != 6 {
			kind, ok := generalNameKinds[tag]
			if !ok {
				kind = fmt.Sprintf("tag %d", tag)
			}
			return fmt.Errorf("it asks for an extra name (%s); only the identity's URI SAN is allowed", kind)
		}
	}
	if len(names) != 1 || len(csr.URIs) != 1 {
		return fmt.Errorf("%d URI SANs; want exactly one, the identity", len(names))
	}
	return nil
}
