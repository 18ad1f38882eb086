package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/control/identity"
)

func TestJoinTokenIsAcceptedForItsIdentity(t *testing.T) {
	dir := t.TempDir()
	cmd := New()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"join-token", "--data-dir", dir, "--identity", "spiffe://cluster.local/ns/shop/sa/web", "--ttl", "1h"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	key, created, err := identity.LoadOrCreateJoinTokenKey(filepath.Join(dir, identity.JoinTokenKeyFile))
	if err != nil || created {
		t.Fatalf("the command should have created the key the identity service uses: created=%v err=%v", created, err)
	}
	v := &identity.JoinTokenValidator{Keys: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, TrustDomain: "cluster.local"}
	id, err := v.Validate(context.Background(), []byte(strings.TrimSpace(out.String())))
	if err != nil || id.String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("token validates as %v, %v", id, err)
	}
}

func TestJoinTokenRefusesBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"join-token", "--data-dir", t.TempDir()},
		{"join-token", "--data-dir", t.TempDir(), "--identity", "web"},
		{"join-token", "--identity", "spiffe://cluster.local/ns/a/sa/b"},
		{"join-token", "--data-dir", t.TempDir(), "--identity", "spiffe://cluster.local/ns/a/sa/b", "--ttl", "-1h"},
	} {
		cmd := New()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}
