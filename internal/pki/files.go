package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a hierarchy kept in a data directory.
const (
	AnchorFile    = "trust-anchor.pem"
	AnchorKeyFile = "trust-anchor-key.pem"
	IssuerFile    = "issuer.pem"
	IssuerKeyFile = "issuer-key.pem"
)

// LoadFiles reads a hierarchy from PEM files — the trust anchors, the issuer
// certificate (optionally followed by intermediates up to an anchor) and the
// issuer's private key — and validates it at now (see NewCA). Errors name the
// file at fault.
func LoadFiles(anchorsFile, issuerCertFile, issuerKeyFile string, now time.Time) (*CA, error) {
	read := func(what, path string) ([]byte, error) {
		if path == "" {
			return nil, fmt.Errorf("no %s file given", what)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return b, nil
	}
	b, err := read("trust anchor", anchorsFile)
	if err != nil {
		return nil, err
	}
	anchors, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("trust anchor file %s: %w", anchorsFile, err)
	}
	if b, err = read("issuer certificate", issuerCertFile); err != nil {
		return nil, err
	}
	chain, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("issuer certificate file %s: %w", issuerCertFile, err)
	}
	if b, err = read("issuer key", issuerKeyFile); err != nil {
		return nil, err
	}
	key, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("issuer key file %s: %w", issuerKeyFile, err)
	}
	ca, err := NewCA(anchors, chain, key, now)
	if err != nil {
		return nil, fmt.Errorf("%w (files: trust anchor %s, issuer %s, issuer key %s)", err, anchorsFile, issuerCertFile, issuerKeyFile)
	}
	return ca, nil
}

// LoadOrCreateDir loads the hierarchy kept in dir. When dir holds none of its
// files it first generates a trust anchor and an issuer for trustDomain with
// the default lifetimes and writes them there: certificates 0644, keys 0600,
// the directory 0700. created reports whether it did. A directory holding
// only some of the files is refused, naming the missing ones, rather than
// overwritten.
func LoadOrCreateDir(dir, trustDomain string, now time.Time) (ca *CA, created bool, err error) {
	names := []string{AnchorFile, AnchorKeyFile, IssuerFile, IssuerKeyFile}
	var present, missing []string
	for _, n := range names {
		_, err := os.Stat(filepath.Join(dir, n))
		switch {
		case err == nil:
			present = append(present, n)
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, n)
		default:
			return nil, false, err
		}
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	switch {
	case len(missing) == 0:
		ca, err := LoadFiles(p(AnchorFile), p(IssuerFile), p(IssuerKeyFile), now)
		return ca, false, err
	case len(present) > 0:
		return nil, false, fmt.Errorf("data directory %s is incomplete: it has %s but not %s; restore the missing files, or move the directory away to generate a new hierarchy (every proxy will then need the new trust anchor)",
			dir, strings.Join(present, ", "), strings.Join(missing, ", "))
	}
	anchor, err := GenerateTrustAnchor(trustDomain, 0, now)
	if err != nil {
		return nil, false, err
	}
	issuer, err := GenerateIssuer(anchor, trustDomain, 0, now)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	anchorKey, err := EncodeKey(anchor.Key)
	if err != nil {
		return nil, false, err
	}
	issuerKey, err := EncodeKey(issuer.Key)
	if err != nil {
		return nil, false, err
	}
	// Keys first, the anchor certificate last: an interrupted run leaves an
	// incomplete directory, which is refused, never a half-usable one.
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{AnchorKeyFile, anchorKey, 0o600},
		{IssuerKeyFile, issuerKey, 0o600},
		{IssuerFile, EncodeCertificates(issuer.Cert), 0o644},
		{AnchorFile, EncodeCertificates(anchor.Cert), 0o644},
	} {
		if err := WriteFileAtomic(p(f.name), f.data, f.mode); err != nil {
			return nil, false, err
		}
	}
	ca, err = NewCA(anchorsOf(anchor), chainOf(issuer), issuer.Key, now)
	return ca, true, err
}

func anchorsOf(k *KeyPair) []*x509.Certificate { return []*x509.Certificate{k.Cert} }
func chainOf(k *KeyPair) []*x509.Certificate   { return []*x509.Certificate{k.Cert} }

// WriteFileAtomic writes data to path with mode through a temporary file in
// the same directory, so readers see the old content or the new, never a
// part.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op once renamed
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
