// Package meshtest runs the real identity service in-process for tests and
// hands out what a proxy needs to join the mesh: a join token file and the
// trust-anchor file.
package meshtest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/control/identity"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// Identity is a running identity service with its own trust anchor.
type Identity struct {
	srv         *identity.Server
	dir         string
	AnchorsFile string
}

// StartIdentity runs an identity service issuing leaves valid for
// leafLifetime until the test ends.
func StartIdentity(t testing.TB, leafLifetime time.Duration) *Identity {
	t.Helper()
	var o identity.Options
	fs := pflag.NewFlagSet("identity", pflag.ContinueOnError)
	o.Flags(fs)
	dir := t.TempDir()
	if err := fs.Parse([]string{"--addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--data-dir=" + dir}); err != nil {
		t.Fatal(err)
	}
	o.LeafLifetime = leafLifetime
	o.RateLimit, o.RateBurst = 1000, 1000
	srv, err := identity.NewServer(o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &Identity{srv: srv, dir: dir, AnchorsFile: filepath.Join(dir, pki.AnchorFile)}
}

// Addr is the identity service's address.
func (i *Identity) Addr() string { return i.srv.Addr().String() }

// Join makes cfg a meshed proxy with the given identity (namespace/sa in
// the default trust domain) and returns its SPIFFE ID.
func (i *Identity) Join(t testing.TB, cfg *config.Config, namespace, serviceAccount string) string {
	t.Helper()
	id, err := meshid.New(meshid.DefaultTrustDomain, namespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	token, err := identity.IssueJoinToken(i.srv.JoinTokenKey(), id, time.Hour, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Identity, cfg.IdentityAddr, cfg.IdentityTokenFile, cfg.TrustAnchorsFile = id.String(), i.Addr(), file, i.AnchorsFile
	return id.String()
}
