package identity

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Join tokens are local mode's proof of identity: `trellis` signs one for a
// workload's identity and hands it to the workload's proxy, which presents it
// with every certificate request. A token is
//
//	tjt1.<base64url(JSON claims)>.<base64url(Ed25519 signature)>
//
// where the signature covers "tjt1.<base64url(JSON claims)>" and the claims
// name exactly one identity, the signing key, and a validity window. The
// token is a bearer credential: whoever holds it can obtain certificates for
// its identity until it expires, so it is written only where that workload's
// proxy can read it.
const joinTokenPrefix = meshid.JoinTokenPrefix

// maxJoinTokenLen bounds what ParseJoinToken reads.
const maxJoinTokenLen = 4096

// JoinTokenClaims are the signed contents of a join token.
type JoinTokenClaims struct {
	Subject  string `json:"sub"` // the SPIFFE ID the token entitles its holder to
	KeyID    string `json:"kid"` // KeyID of the signing key
	IssuedAt int64  `json:"iat"` // Unix seconds
	Expires  int64  `json:"exp"` // Unix seconds
	ID       string `json:"jti"` // random: audit logs, and spending a single-use token
	// Once makes the token good for one certificate: the proxy renews it
	// with the certificate itself (RenewWithCertificate), so a token read
	// after its proxy started is worth nothing.
	Once bool `json:"once,omitempty"`
}

// JoinToken is a parsed, not yet verified, join token.
type JoinToken struct {
	Claims JoinTokenClaims
	ID     meshid.ID // Claims.Subject, parsed
	signed []byte    // the bytes the signature covers
	sig    []byte
}

// KeyID names an Ed25519 public key in tokens: the first 8 bytes of its
// SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// MaxJoinTokenTTL bounds a join token's lifetime.
const MaxJoinTokenTTL = 30 * 24 * time.Hour

// errControlPlaneIdentity refuses a join token for the control plane's own
// namespace: proxies trust those identities to issue certificates, serve
// discovery and tap them, and no workload may take one.
var errControlPlaneIdentity = fmt.Errorf("identities of namespace %s are the control plane's: no join token gives one", meshid.ControlPlaneNamespace)

// IssueJoinToken signs a join token entitling its holder to id from now
// until now+ttl (at most MaxJoinTokenTTL) — to one certificate if once.
func IssueJoinToken(key ed25519.PrivateKey, id meshid.ID, ttl time.Duration, once bool, now time.Time) (string, error) {
	if err := id.Validate(); err != nil {
		return "", fmt.Errorf("join token identity: %w", err)
	}
	if id.Namespace == meshid.ControlPlaneNamespace {
		return "", fmt.Errorf("join token for %s: %w", id, errControlPlaneIdentity)
	}
	if ttl < time.Second || ttl > MaxJoinTokenTTL {
		return "", fmt.Errorf("join token lifetime %v: must be between 1s and %v", ttl, MaxJoinTokenTTL)
	}
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("join token key is not an Ed25519 private key")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims, err := json.Marshal(JoinTokenClaims{
		Subject:  id.String(),
		KeyID:    KeyID(key.Public().(ed25519.PublicKey)),
		IssuedAt: now.Unix(),
		Expires:  now.Add(ttl).Unix(),
		ID:       hex.EncodeToString(jti[:]),
		Once:     once,
	})
	if err != nil {
		return "", err
	}
	signed := joinTokenPrefix + base64.RawURLEncoding.EncodeToString(claims)
	sig := ed25519.Sign(key, []byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParseJoinToken parses a join token's structure and claims without
// verifying its signature or validity window. Errors wrap ErrInvalidToken.
func ParseJoinToken(token []byte) (*JoinToken, error) {
	if len(token) > maxJoinTokenLen {
		return nil, invalid("join token is %d bytes; at most %d", len(token), maxJoinTokenLen)
	}
	if !bytes.HasPrefix(token, []byte(joinTokenPrefix)) {
		return nil, invalid("not a join token (no %q prefix)", joinTokenPrefix)
	}
	dot := bytes.LastIndexByte(token, '.')
	if dot < len(joinTokenPrefix) {
		return nil, invalid("join token has no signature")
	}
	claimsB64, sigB64 := token[len(joinTokenPrefix):dot], token[dot+1:]
	claimsJSON, err := base64.RawURLEncoding.AppendDecode(nil, claimsB64)
	if err != nil {
		return nil, invalid("join token claims: %v", err)
	}
	sig, err := base64.RawURLEncoding.AppendDecode(nil, sigB64)
	if err != nil {
		return nil, invalid("join token signature: %v", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, invalid("join token signature is %d bytes; want %d", len(sig), ed25519.SignatureSize)
	}
	dec := json.NewDecoder(bytes.NewReader(claimsJSON))
	dec.DisallowUnknownFields()
	var c JoinTokenClaims
	if err := dec.Decode(&c); err != nil {
		return nil, invalid("join token claims: %v", err)
	}
	if dec.More() {
		return nil, invalid("join token claims: data after the JSON object")
	}
	id, err := meshid.Parse(c.Subject)
	if err != nil {
		return nil, invalid("join token subject: %v", err)
	}
	if c.KeyID == "" || c.Expires <= c.IssuedAt || c.IssuedAt <= 0 {
		return nil, invalid("join token claims are incomplete (kid %q, iat %d, exp %d)", c.KeyID, c.IssuedAt, c.Expires)
	}
	return &JoinToken{Claims: c, ID: id, signed: token[:dot], sig: sig}, nil
}

// JoinTokenValidator accepts join tokens signed by one of Keys, for an
// identity in TrustDomain, within their validity window, and single-use
// tokens once.
type JoinTokenValidator struct {
	Keys        []ed25519.PublicKey
	TrustDomain string
	Now         func() time.Time // time.Now if nil

	mu    sync.Mutex
	spent map[string]time.Time // single-use token IDs -> their expiry
}

// Spend records the use of a valid token for a certificate: a single-use
// token's second use is refused (ErrInvalidToken). Spent tokens are
// remembered until they expire; a restarted identity service forgets them,
// which is why single-use tokens live minutes.
func (v *JoinTokenValidator) Spend(token []byte, now time.Time) error {
	t, err := ParseJoinToken(token)
	if err != nil || !t.Claims.Once {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.spent == nil {
		v.spent = map[string]time.Time{}
	}
	if _, ok := v.spent[t.Claims.ID]; ok {
		return invalid("join token %s for %s was already used: a single-use token gets one certificate, the proxy renews with its certificate", t.Claims.ID, t.ID)
	}
	for id, exp := range v.spent {
		if now.After(exp) {
			delete(v.spent, id)
		}
	}
	v.spent[t.Claims.ID] = time.Unix(t.Claims.Expires, 0)
	return nil
}

// Validate implements Validator.
func (v *JoinTokenValidator) Validate(_ context.Context, token []byte) (meshid.ID, error) {
	t, err := ParseJoinToken(token)
	if err != nil {
		return meshid.ID{}, err
	}
	var key ed25519.PublicKey
	for _, k := range v.Keys {
		if KeyID(k) == t.Claims.KeyID {
			key = k
			break
		}
	}
	if key == nil {
		return meshid.ID{}, invalid("join token was signed by key %s, which this identity service does not trust", t.Claims.KeyID)
	}
	if !ed25519.Verify(key, t.signed, t.sig) {
		return meshid.ID{}, invalid("join token signature does not verify")
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if exp := time.Unix(t.Claims.Expires, 0); !now.Before(exp) {
		return meshid.ID{}, invalid("join token for %s expired at %s", t.ID, exp.UTC().Format(time.RFC3339))
	}
	if iat := time.Unix(t.Claims.IssuedAt, 0); now.Add(pki.ClockSkewAllowance).Before(iat) {
		return meshid.ID{}, invalid("join token for %s is issued in the future (%s); check the clocks", t.ID, iat.UTC().Format(time.RFC3339))
	}
	if t.ID.TrustDomain != v.TrustDomain {
		return meshid.ID{}, invalid("join token is for trust domain %q, not %q", t.ID.TrustDomain, v.TrustDomain)
	}
	if t.ID.Namespace == meshid.ControlPlaneNamespace {
		return meshid.ID{}, invalid("join token for %s: %v", t.ID, errControlPlaneIdentity)
	}
	if life := time.Duration(t.Claims.Expires-t.Claims.IssuedAt) * time.Second; life > MaxJoinTokenTTL {
		return meshid.ID{}, invalid("join token for %s lives %v, more than the %v allowed", t.ID, life, MaxJoinTokenTTL)
	}
	return t.ID, nil
}

// LoadOrCreateJoinTokenKey reads the Ed25519 private key that signs join
// tokens from a PEM (PKCS #8) file, first generating it (mode 0600, in a
// directory created 0700) if the file does not exist.
func LoadOrCreateJoinTokenKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		if err := pki.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, false, err
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	s, err := pki.ParseKey(b)
	if err != nil {
		return nil, false, fmt.Errorf("join token key %s: %w", path, err)
	}
	k, ok := s.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("join token key %s is not an Ed25519 key", path)
	}
	return k, false, nil
}
