package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
)

var (
	web = meshid.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	api = meshid.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "api"}
)

// startServer runs a real identity server on loopback with a generated
// hierarchy and returns it with a real gRPC client that verifies it.
func startServer(t *testing.T, edit func(*Options)) (*Server, identityv1.IdentityClient) {
	t.Helper()
	o := Options{
		Addr:                "127.0.0.1:0",
		AdminAddr:           "127.0.0.1:0",
		TrustDomain:         meshid.DefaultTrustDomain,
		DataDir:             t.TempDir(),
		LeafLifetime:        time.Hour,
		ExpiryWarning:       DefaultExpiryWarning,
		RateLimit:           100,
		RateBurst:           100,
		ShutdownGracePeriod: time.Second,
	}
	if edit != nil {
		edit(&o)
	}
	srv, err := NewServer(o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv, dial(t, srv)
}

// dial connects a gRPC client that accepts only the server's identity under
// its trust anchor.
func dial(t *testing.T, srv *Server) identityv1.IdentityClient {
	t.Helper()
	tlsCfg := proxyid.ClientConfig(srv.CA().AnchorPool(), meshid.IdentityServiceID(meshid.DefaultTrustDomain), nil)
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return identityv1.NewIdentityClient(conn)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// makeCSR returns a DER CSR signed by key for the template edit builds from
// one naming id.
func makeCSR(t testing.TB, key crypto.Signer, id meshid.ID, edit func(*x509.CertificateRequest)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func token(t testing.TB, srv *Server, id meshid.ID, ttl time.Duration, now time.Time) []byte {
	t.Helper()
	tok, err := IssueJoinToken(srv.JoinTokenKey(), id, ttl, false, now)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}
