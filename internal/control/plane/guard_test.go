package plane

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
)

// The control plane answers proxies of the mesh only: without a client
// certificate it issued, discovery and registration are refused
// (UNAUTHENTICATED) while certificate issuance still answers; and it
// serves at most --max-streams streams at once (RESOURCE_EXHAUSTED
// beyond), freeing each as it ends.
func TestControlPlaneAnswersProxiesOnly(t *testing.T) {
	p, _ := startPlane(t, "--max-streams=3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		t.Helper()
		var get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
		if cert != nil {
			get = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		conn, err := grpc.NewClient(p.identity.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			proxyid.ClientConfig(p.identity.CA().AnchorPool(), meshid.IdentityServiceID(meshid.DefaultTrustDomain), get))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	watch := func(conn *grpc.ClientConn) error {
		stream, err := destinationv1.NewDestinationClient(conn).Get(ctx, &destinationv1.GetDestination{Authority: "web.default.svc.cluster.local:8080"})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}

	anonymous := dial(nil)
	if err := watch(anonymous); status.Code(err) != codes.Unauthenticated {
		t.Errorf("discovery without a client certificate: %v, want Unauthenticated", err)
	}
	if _, err := destinationv1.NewRegistryClient(anonymous).Register(ctx, &destinationv1.RegisterRequest{Name: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("registration without a client certificate: %v, want Unauthenticated", err)
	}
	// Issuance answers (here: refusing a bad token, which it had to read).
	_, err := identityv1.NewIdentityClient(anonymous).Certify(ctx, &identityv1.CertifyRequest{Identity: "spiffe://cluster.local/ns/default/sa/web", Token: []byte("x")})
	if err == nil || strings.Contains(status.Convert(err).Message(), "proxies of the mesh only") || !strings.Contains(err.Error(), "token") {
		t.Errorf("certificate issuance without a client certificate: %v, want the token refused", err)
	}

	proxy := dial(issue(t, p, "web"))
	var streams []context.CancelFunc
	for i := range 3 {
		sctx, stop := context.WithCancel(ctx)
		streams = append(streams, stop)
		stream, err := destinationv1.NewDestinationClient(proxy).Get(sctx, &destinationv1.GetDestination{Authority: "web.default.svc.cluster.local:8080"})
		if err == nil {
			_, err = stream.Recv()
		}
		if err != nil {
			t.Fatalf("stream %d with a proxy certificate: %v", i, err)
		}
	}
	if err := watch(proxy); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a fourth stream with --max-streams=3: %v, want ResourceExhausted", err)
	}
	streams[0]()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sctx, stop := context.WithCancel(ctx)
		stream, err := destinationv1.NewDestinationClient(proxy).Get(sctx, &destinationv1.GetDestination{Authority: "web.default.svc.cluster.local:8080"})
		if err == nil {
			_, err = stream.Recv()
		}
		stop()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a stream ended, a new one is still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// issue is a certificate for service account sa of namespace default,
// from the plane's own issuer.
func issue(t *testing.T, p *Plane, sa string) *tls.Certificate {
	t.Helper()
	cert, err := p.identity.CA().IssueTLS(meshid.ID{TrustDomain: meshid.DefaultTrustDomain, Namespace: "default", ServiceAccount: sa}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
