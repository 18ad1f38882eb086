package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

func TestJoinTokens(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	v := &JoinTokenValidator{Keys: []ed25519.PublicKey{pub}, TrustDomain: "cluster.local", Now: func() time.Time { return now }}
	tok, err := IssueJoinToken(key, web, time.Hour, false, now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "tjt1.") {
		t.Errorf("token %q lacks the version prefix", tok)
	}
	if id, err := v.Validate(context.Background(), []byte(tok)); err != nil || id != web {
		t.Fatalf("Validate = %v, %v; want %v", id, err, web)
	}
	otherTD, _ := IssueJoinToken(key, meshid.ID{TrustDomain: "example.org", Namespace: "default", ServiceAccount: "web"}, time.Hour, false, now)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	foreign, _ := IssueJoinToken(otherKey, web, time.Hour, false, now)
	future, _ := IssueJoinToken(key, web, time.Hour, false, now.Add(time.Minute))
	nearFuture, _ := IssueJoinToken(key, web, time.Hour, false, now.Add(10*time.Second))
	expired, _ := IssueJoinToken(key, web, time.Hour, false, now.Add(-time.Hour))
	// Re-sign modified claims with a foreign key but claim the trusted kid.
	parts := strings.Split(tok, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forgedClaims := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), "/sa/web", "/sa/api", 1)))
	forged := "tjt1." + forgedClaims + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(otherKey, []byte("tjt1."+forgedClaims)))
	swapped := "tjt1." + forgedClaims + "." + parts[2]

	// Tokens the key signed, but IssueJoinToken would not have issued.
	signed := func(sub string, iat, exp int64) string {
		c := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":%q,"kid":%q,"iat":%d,"exp":%d,"jti":"x"}`,
			sub, KeyID(key.Public().(ed25519.PublicKey)), iat, exp)))
		return "tjt1." + c + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte("tjt1."+c)))
	}
	controlPlane := signed("spiffe://cluster.local/ns/trellis/sa/trellis-identity", now.Unix(), now.Add(time.Hour).Unix())
	century := signed(web.String(), now.Unix(), now.Add(100*365*24*time.Hour).Unix())

	if _, err := v.Validate(context.Background(), []byte(nearFuture)); err != nil {
		t.Errorf("token issued 10s ahead (within the clock skew allowance): %v", err)
	}
	for _, tc := range []struct{ name, token, want string }{
		{"expired", expired, "expired at"},
		{"issued in the future", future, "issued in the future"},
		{"another trust domain", otherTD, `trust domain "example.org", not "cluster.local"`},
		{"signed by an unknown key", foreign, "which this identity service does not trust"},
		{"claims forged and re-signed", forged, "signature does not verify"},
		{"claims swapped under a valid signature", swapped, "signature does not verify"},
		{"no prefix", strings.TrimPrefix(tok, "tjt1."), "not a join token"},
		{"no signature", "tjt1." + parts[1], "join token has no signature"},
		{"short signature", "tjt1." + parts[1] + ".AAAA", "signature is 3 bytes"},
		{"bad base64", "tjt1.!!!." + parts[2], "join token claims"},
		{"unknown claim", "tjt1." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://cluster.local/ns/a/sa/b","kid":"x","iat":1,"exp":2,"jti":"","admin":true}`)) + "." + parts[2], "unknown field"},
		{"two JSON values", "tjt1." + base64.RawURLEncoding.EncodeToString(append(claims, claims...)) + "." + parts[2], "data after the JSON object"},
		{"bad subject", "tjt1." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"web","kid":"x","iat":1,"exp":2}`)) + "." + parts[2], "join token subject"},
		{"exp before iat", "tjt1." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://cluster.local/ns/a/sa/b","kid":"x","iat":5,"exp":2}`)) + "." + parts[2], "incomplete"},
		{"huge", "tjt1." + strings.Repeat("A", 5000), "at most 4096"},
		{"the control plane's identity", controlPlane, "are the control plane's"},
		{"a century long", century, "more than the 720h0m0s allowed"},
	} {
		_, err := v.Validate(context.Background(), []byte(tc.token))
		if err == nil || !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrInvalidToken containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := IssueJoinToken(key, meshid.ID{}, time.Hour, false, now); err == nil {
		t.Error("issued a token for no identity")
	}
	if _, err := IssueJoinToken(key, web, 0, false, now); err == nil {
		t.Error("issued a token with no lifetime")
	}
	if _, err := IssueJoinToken(key, web, 31*24*time.Hour, false, now); err == nil || !strings.Contains(err.Error(), "between 1s and 720h") {
		t.Errorf("a 31-day token: %v", err)
	}
	if _, err := IssueJoinToken(key, meshid.IdentityServiceID("cluster.local"), time.Hour, false, now); err == nil || !strings.Contains(err.Error(), "control plane's") {
		t.Errorf("a token for the identity service's own identity: %v", err)
	}
}

func TestJoinTokenKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "jt.pem")
	k1, created, err := LoadOrCreateJoinTokenKey(path)
	if err != nil || !created {
		t.Fatalf("first: %v, created %v", err, created)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v; want 0600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateJoinTokenKey(path)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("second: %v, created %v, same %v", err, created, k1.Equal(k2))
	}
	os.WriteFile(path, []byte("junk"), 0o600)
	if _, _, err := LoadOrCreateJoinTokenKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("junk key: %v", err)
	}
}

// FuzzParseJoinToken checks that parsing never panics, that every accepted
// token names a valid identity, and that no mutation of a valid token is
// accepted by the validator unless it is the token itself.
func FuzzParseJoinToken(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	good, _ := IssueJoinToken(key, web, time.Hour, false, now)
	v := &JoinTokenValidator{Keys: []ed25519.PublicKey{pub}, TrustDomain: "cluster.local", Now: func() time.Time { return now }}
	f.Add([]byte(good))
	f.Add([]byte("tjt1.e30.AAAA"))
	f.Add([]byte("tjt1.."))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, token []byte) {
		jt, err := ParseJoinToken(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("parse error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		if err := jt.ID.Validate(); err != nil {
			t.Fatalf("accepted a token for an invalid identity: %v", err)
		}
		id, err := v.Validate(context.Background(), token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("validate error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		// Only the genuine token (or a re-encoding the signature still
		// covers byte for byte) may validate, and only for its identity.
		if id != web || string(token[:strings.LastIndexByte(string(token), '.')]) != good[:strings.LastIndexByte(good, '.')] {
			t.Fatalf("a token not signed by the key validated: %q -> %v", token, id)
		}
	})
}
