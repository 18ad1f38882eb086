package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"
)

// WebhookLifetime is how long a generated webhook certificate is valid.
const WebhookLifetime = 365 * 24 * time.Hour

// Webhook is the injector's serving certificate and the CA the webhook
// configuration's caBundle holds, all PEM.
type Webhook struct{ CAPEM, CertPEM, KeyPEM string }

// WebhookCertificate generates a CA and a serving certificate it signs for
// host (ECDSA P-256), valid from now for WebhookLifetime.
func WebhookCertificate(host string, now time.Time) (Webhook, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Webhook{}, err
	}
	from, until := now.Add(-time.Minute), now.Add(WebhookLifetime)
	caSerial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return Webhook{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return Webhook{}, err
	}
	caTmpl := &x509.Certificate{SerialNumber: caSerial, Subject: pkix.Name{CommonName: "trellis-injector-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: from, NotAfter: until}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Webhook{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Webhook{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Webhook{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: from, NotAfter: until}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return Webhook{}, err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Webhook{}, err
	}
	enc := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return Webhook{CAPEM: enc("CERTIFICATE", caDER), CertPEM: enc("CERTIFICATE", der), KeyPEM: enc("EC PRIVATE KEY", kd)}, nil
}
