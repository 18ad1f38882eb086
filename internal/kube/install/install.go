// Package install renders Trellis's Kubernetes manifests: the CRDs and the
// control plane, from the Helm charts in package charts, with values built
// from `trellis install`'s options. A trust anchor, an issuer and the
// injector's webhook certificate are generated unless supplied, so one
// command gives a complete, self-consistent install.
package install

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Options are what `trellis install` takes.
type Options struct {
	// Version and Registry name the images:
	// <Registry>/trellis-{control,proxy}:<Version>.
	Version, Registry string
	PullPolicy        string
	HA                bool
	TrustDomain       string
	ClusterDomain     string
	// TrustAnchorsFile, IssuerCertFile and IssuerKeyFile supply the
	// identity hierarchy; empty, one is generated (ECDSA P-256, one year).
	TrustAnchorsFile, IssuerCertFile, IssuerKeyFile string
	// ExternalIssuer leaves the Secret trellis-identity-issuer to its
	// owner (e.g. cert-manager); TrustAnchorsFile is then required.
	ExternalIssuer bool
	// Identity and Webhook, when set, are used as they are (an upgrade
	// keeps the cluster's); otherwise they come from the files above or
	// are generated.
	Identity *Identity
	Webhook  *Webhook
	// Prometheus deploys a Prometheus scraping the proxies for the metrics
	// API; PrometheusURL points it at the user's own instead. Neither: the
	// destination service's embedded store scrapes them.
	Prometheus    bool
	PrometheusURL string
	// Overrides are Helm-style values merged last (--set, -f).
	Overrides map[string]any
}

// Identity is the mesh's hierarchy, PEM; the issuer's are empty when it is
// external.
type Identity struct{ AnchorsPEM, IssuerCertPEM, IssuerKeyPEM string }

// Values builds the control-plane chart's values at now.
func (o Options) Values(now time.Time) (map[string]any, error) {
	if o.Prometheus && o.PrometheusURL != "" {
		return nil, errors.New("--prometheus deploys a Prometheus, --prometheus-url names one of yours: give one of them")
	}
	if o.PrometheusURL != "" {
		if err := metricsapi.CheckURL(o.PrometheusURL); err != nil {
			return nil, err
		}
	}
	id := o.Identity
	if id == nil {
		anchors, crt, key, err := o.identity(now)
		if err != nil {
			return nil, err
		}
		id = &Identity{anchors, crt, key}
	}
	webhook := o.Webhook
	if webhook == nil {
		w, err := WebhookCertificate("trellis-injector."+Namespace+".svc", now)
		if err != nil {
			return nil, err
		}
		webhook = &w
	}
	v := map[string]any{
		"clusterDomain": o.ClusterDomain,
		"trustDomain":   o.TrustDomain,
		"ha":            o.HA,
		"image":         map[string]any{"registry": o.Registry, "version": o.Version, "pullPolicy": o.PullPolicy},
		"identity": map[string]any{
			"trustAnchorsPEM": id.AnchorsPEM,
			"issuer":          map[string]any{"external": o.ExternalIssuer, "crtPEM": id.IssuerCertPEM, "keyPEM": id.IssuerKeyPEM},
		},
		"injector":   map[string]any{"caBundlePEM": webhook.CAPEM, "crtPEM": webhook.CertPEM, "keyPEM": webhook.KeyPEM},
		"prometheus": map[string]any{"enabled": o.Prometheus, "url": o.PrometheusURL},
	}
	return Merge(v, o.Overrides), nil
}

// identity returns the hierarchy's PEMs: read from the files given, or
// generated.
func (o Options) identity(now time.Time) (anchors, crt, key string, err error) {
	given := o.TrustAnchorsFile != "" || o.IssuerCertFile != "" || o.IssuerKeyFile != ""
	switch {
	case o.ExternalIssuer:
		if o.TrustAnchorsFile == "" {
			return "", "", "", fmt.Errorf("an external issuer needs --identity-trust-anchors-file: the anchor that signs it")
		}
		b, err := os.ReadFile(o.TrustAnchorsFile)
		if err != nil {
			return "", "", "", err
		}
		if _, err := pki.ParseCertificates(b); err != nil {
			return "", "", "", fmt.Errorf("trust anchors file %s: %w", o.TrustAnchorsFile, err)
		}
		return string(b), "", "", nil
	case given:
		// LoadFiles checks the hierarchy: the issuer signed by an anchor,
		// the key its own, nothing expired.
		if _, err := pki.LoadFiles(o.TrustAnchorsFile, o.IssuerCertFile, o.IssuerKeyFile, now); err != nil {
			return "", "", "", fmt.Errorf("--identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file: %w", err)
		}
		var out [3][]byte
		for i, f := range []string{o.TrustAnchorsFile, o.IssuerCertFile, o.IssuerKeyFile} {
			if out[i], err = os.ReadFile(f); err != nil {
				return "", "", "", err
			}
		}
		return string(out[0]), string(out[1]), string(out[2]), nil
	}
	anchor, err := pki.GenerateTrustAnchor(o.TrustDomain, 0, now)
	if err != nil {
		return "", "", "", err
	}
	issuer, err := pki.GenerateIssuer(anchor, o.TrustDomain, 0, now)
	if err != nil {
		return "", "", "", err
	}
	k, err := pki.EncodeKey(issuer.Key)
	if err != nil {
		return "", "", "", err
	}
	return string(pki.EncodeCertificates(anchor.Cert)), string(pki.EncodeCertificates(issuer.Cert)), string(k), nil
}

// Merge merges src into dst, maps recursively, src winning; it returns dst.
func Merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = Merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}
