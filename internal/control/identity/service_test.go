package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

func TestCertifyIssuesAVerifiableLeaf(t *testing.T) {
	srv, client := startServer(t, func(o *Options) { o.LeafLifetime = 90 * time.Minute })
	key := newKey(t)
	before := time.Now()
	resp, err := client.Certify(context.Background(), &identityv1.CertifyRequest{
		Identity:                  web.String(),
		Token:                     token(t, srv, web, time.Hour, time.Now()),
		CertificateSigningRequest: makeCSR(t, key, web, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.LeafCertificate)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range resp.IntermediateCertificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if c.Equal(srv.CA().Anchor()) {
			t.Error("the trust anchor is sent with the chain")
		}
		inter.AddCert(c)
	}
	if len(resp.IntermediateCertificates) != 1 || !bytes.Equal(resp.IntermediateCertificates[0], srv.CA().Issuer().Raw) {
		t.Errorf("intermediates: %d; want the issuer", len(resp.IntermediateCertificates))
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: srv.CA().AnchorPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("chain does not verify against the trust anchor for %v: %v", usage, err)
		}
	}
	if got, err := meshid.FromCertificate(leaf); err != nil || got != web {
		t.Errorf("leaf names %v (%v); want %v", got, err, web)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has extra names: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("leaf is not for the CSR's key")
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore) - pki.ClockSkewAllowance; life < 90*time.Minute-time.Second || life > 90*time.Minute+time.Second {
		t.Errorf("lifetime %v; want 90m", life)
	}
	if leaf.NotAfter.Before(before.Add(90*time.Minute-time.Second)) || leaf.NotAfter.After(time.Now().Add(90*time.Minute+time.Second)) {
		t.Errorf("NotAfter %v is not 90m from the request", leaf.NotAfter)
	}
	if !resp.ValidUntil.AsTime().Equal(leaf.NotAfter) {
		t.Errorf("valid_until %v; NotAfter %v", resp.ValidUntil.AsTime(), leaf.NotAfter)
	}
}

func TestCertifyRefusals(t *testing.T) {
	srv, client := startServer(t, nil)
	now := time.Now()
	key := newKey(t)
	good := func() []byte { return makeCSR(t, key, web, nil) }
	webToken := token(t, srv, web, time.Hour, now)
	_, foreignKey, _ := ed25519.GenerateKey(rand.Reader)
	foreign, _ := IssueJoinToken(foreignKey, web, time.Hour, false, now)
	tampered := bytes.Clone(webToken)
	tampered[len("tjt1.")+3] ^= 'A' ^ 'B'
	badSig := makeCSR(t, key, web, nil)
	badSig[len(badSig)-1] ^= 0x01
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)

	for _, tc := range []struct {
		name     string
		identity string
		token    []byte
		csr      []byte
		code     codes.Code
		msg      string
	}{
		{"token for another identity", api.String(), webToken, makeCSR(t, key, api, nil), codes.PermissionDenied,
			"the token proves spiffe://cluster.local/ns/default/sa/web, not the requested spiffe://cluster.local/ns/default/sa/api"},
		{"CSR names another identity", web.String(), webToken, makeCSR(t, key, api, nil), codes.InvalidArgument,
			`names "spiffe://cluster.local/ns/default/sa/api", not the requested identity`},
		{"malformed CSR", web.String(), webToken, []byte("not a CSR"), codes.InvalidArgument, "does not parse"},
		{"empty CSR", web.String(), webToken, nil, codes.InvalidArgument, "no certificate signing request"},
		{"CSR with a bad signature", web.String(), webToken, badSig, codes.InvalidArgument, "signature does not verify"},
		{"CSR with an extra DNS SAN", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.DNSNames = []string{"web.default.svc"} }),
			codes.InvalidArgument, "asks for an extra name (DNS)"},
		{"CSR with an IP SAN", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }),
			codes.InvalidArgument, "asks for an extra name (IP)"},
		{"CSR with an email SAN", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"a@b.c"} }),
			codes.InvalidArgument, "email"},
		{"CSR with two URI SANs", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.URIs = append(r.URIs, api.URL()) }),
			codes.InvalidArgument, "2 URI SANs"},
		{"CSR without SAN", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.URIs = nil }),
			codes.InvalidArgument, "no subject alternative name"},
		{"CSR subject claims something else", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) { r.Subject = pkix.Name{CommonName: "admin"} }),
			codes.InvalidArgument, `subject "CN=admin" claims more than the requested identity`},
		{"CSR subject with an organization", web.String(), webToken, makeCSR(t, key, web, func(r *x509.CertificateRequest) {
			r.Subject = pkix.Name{CommonName: web.String(), Organization: []string{"system:masters"}}
		}), codes.InvalidArgument, "claims more than the requested identity"},
		{"CSR with a P-384 key", web.String(), webToken, makeCSR(t, p384, web, nil), codes.InvalidArgument, "leaf keys must be ECDSA P-256"},
		{"expired token", web.String(), token(t, srv, web, time.Hour, now.Add(-2*time.Hour)), good(), codes.Unauthenticated, "expired at"},
		{"token signed by someone else", web.String(), []byte(foreign), good(), codes.Unauthenticated, "which this identity service does not trust"},
		{"tampered token", web.String(), tampered, good(), codes.Unauthenticated, "invalid token"},
		{"malformed token", web.String(), []byte("hello"), good(), codes.Unauthenticated, "not a join token"},
		{"no token", web.String(), nil, good(), codes.Unauthenticated, "no token"},
		{"identity not a SPIFFE ID", "web", webToken, good(), codes.InvalidArgument, "not a SPIFFE ID"},
		{"identity in another trust domain", "spiffe://example.org/ns/default/sa/web", webToken, good(), codes.InvalidArgument, `issues for "cluster.local"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Certify(context.Background(), &identityv1.CertifyRequest{Identity: tc.identity, Token: tc.token, CertificateSigningRequest: tc.csr})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v %q; want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

func TestCertifyRateLimitsPerCaller(t *testing.T) {
	srv, client := startServer(t, func(o *Options) { o.RateLimit, o.RateBurst = 0.001, 3 })
	key := newKey(t)
	certify := func(id meshid.ID) error {
		_, err := client.Certify(context.Background(), &identityv1.CertifyRequest{
			Identity: id.String(), Token: token(t, srv, id, time.Hour, time.Now()), CertificateSigningRequest: makeCSR(t, key, id, nil),
		})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := certify(web); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	err := certify(web)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "too many certificate requests for spiffe://cluster.local/ns/default/sa/web") {
		t.Fatalf("4th request: %v; want ResourceExhausted", err)
	}
	// Another caller has its own budget.
	if err := certify(api); err != nil {
		t.Fatalf("other identity: %v", err)
	}
	// Refused callers with bad tokens do not spend the victim's budget: only
	// proven callers are counted.
	_, err = client.Certify(context.Background(), &identityv1.CertifyRequest{Identity: api.String(), Token: []byte("garbage"), CertificateSigningRequest: makeCSR(t, key, api, nil)})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("garbage token: %v", err)
	}
	if err := certify(api); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
}

func TestLimiterForgetsRefilledCallers(t *testing.T) {
	l := newLimiter(1, 2)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		l.allow(string(rune('a'+i%26))+string(rune('a'+i/26)), t0)
	}
	if len(l.buckets) != 100 {
		t.Fatalf("%d buckets", len(l.buckets))
	}
	if !l.allow("new", t0.Add(2*time.Minute)) || len(l.buckets) != 1 {
		t.Fatalf("after a sweep %d buckets remain; want only the new caller", len(l.buckets))
	}
}

// failingValidator stands in for a proof backend that cannot be reached.
type failingValidator struct{}

func (failingValidator) Validate(context.Context, []byte) (meshid.ID, error) {
	return meshid.ID{}, errors.New("API server unreachable")
}

func TestValidatorOutageIsUnavailable(t *testing.T) {
	anchor, _ := pki.GenerateTrustAnchor("cluster.local", 0, time.Now())
	issuer, _ := pki.GenerateIssuer(anchor, "cluster.local", 0, time.Now())
	ca, err := pki.NewCA([]*x509.Certificate{anchor.Cert}, []*x509.Certificate{issuer.Cert}, issuer.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{CA: ca, TrustDomain: "cluster.local", Validator: failingValidator{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Certify(context.Background(), &identityv1.CertifyRequest{Identity: web.String(), Token: []byte("t"), CertificateSigningRequest: makeCSR(t, newKey(t), web, nil)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "API server unreachable") {
		t.Fatalf("got %v; want Unavailable", err)
	}
}

func TestExpiryWarning(t *testing.T) {
	start := time.Now()
	anchor, _ := pki.GenerateTrustAnchor("cluster.local", 0, start)
	issuer, _ := pki.GenerateIssuer(anchor, "cluster.local", 100*24*time.Hour, start)
	ca, err := pki.NewCA([]*x509.Certificate{anchor.Cert}, []*x509.Certificate{issuer.Cert}, issuer.Key, start)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	now := start
	svc, err := New(Config{CA: ca, TrustDomain: "cluster.local", Validator: failingValidator{},
		Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if left := svc.CheckExpiry(); left < 99*24*time.Hour || logs.Len() != 0 {
		t.Errorf("100 days left: %v, logged %q", left, logs.String())
	}
	now = start.Add(50 * 24 * time.Hour)
	svc.CheckExpiry()
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "the issuer expires in 49 days") {
		t.Errorf("50 days left, want a warning; logged %q", s)
	}
	logs.Reset()
	now = start.Add(101 * 24 * time.Hour)
	svc.CheckExpiry()
	if s := logs.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, "EXPIRED") {
		t.Errorf("expired, want an error; logged %q", s)
	}
}

func TestAdminEndpointsAndGracefulStop(t *testing.T) {
	srv, client := startServer(t, nil)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.AdminAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// One request so the counter has a sample.
	client.Certify(context.Background(), &identityv1.CertifyRequest{Identity: web.String()})
	testkit.WaitFor(t, "a 200 from /ready", func() bool { code, _ := get("/ready"); return code == 200 })
	_, body := get("/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	gauge := func(name string) float64 {
		if f := fams[name]; f != nil && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
		t.Errorf("no %s", name)
		return 0
	}
	if got, want := gauge("identity_issuer_expiration_timestamp_seconds"), float64(srv.CA().NotAfter().Unix()); got != want {
		t.Errorf("issuer expiry %v; want %v", got, want)
	}
	if got, want := gauge("identity_trust_anchor_expiration_timestamp_seconds"), float64(srv.CA().Anchor().NotAfter.Unix()); got != want {
		t.Errorf("anchor expiry %v; want %v", got, want)
	}
	if !strings.Contains(body, `identity_certify_total{code="Unauthenticated"} 1`) {
		t.Errorf("no count of the refused request in\n%s", body)
	}
}

func TestOptionsNameTheFlag(t *testing.T) {
	base := func() Options {
		return Options{Addr: ":0", AdminAddr: ":0", TrustDomain: "cluster.local", DataDir: t.TempDir(), LeafLifetime: time.Hour,
			RateLimit: 1, RateBurst: 1, ExpiryWarning: time.Hour}
	}
	for _, tc := range []struct {
		edit func(*Options)
		want string
	}{
		{func(o *Options) { o.TrustDomain = "Bad Domain" }, "--trust-domain"},
		{func(o *Options) { o.DataDir = "" }, "give --data-dir"},
		{func(o *Options) { o.TrustAnchorPEM = "a.pem" }, "give all three or none"},
		{func(o *Options) { o.LeafLifetime = 0 }, "--leaf-lifetime"},
		{func(o *Options) { o.Addr = "nowhere" }, "--addr"},
		{func(o *Options) { o.ServerIdentity = "spiffe://x/y" }, "--server-identity"},
		{func(o *Options) { o.MaxStreams = -1 }, "--max-streams -1: must be positive"},
		{func(o *Options) { o.MaxStreamsPerConnection = -5 }, "--max-streams-per-connection -5"},
		{func(o *Options) {
			o.DataDir, o.TrustAnchorPEM, o.IssuerCertPEM, o.IssuerKeyPEM = "", "a", "b", "c"
		}, "--join-token-key-file"},
	} {
		o := base()
		tc.edit(&o)
		_, err := NewServer(o, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v; want an error naming %q", err, tc.want)
		}
	}
	// A port in use names the flag too.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	o := base()
	o.AdminAddr = ln.Addr().String()
	if _, err := NewServer(o, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--admin-addr") {
		t.Errorf("admin port in use: %v", err)
	}
}

// A single-use join token gets one certificate; the proxy then renews with
// that certificate on the connection and no token — for its own identity
// only — and without either it gets nothing.
func TestSingleUseTokenAndRenewalByCertificate(t *testing.T) {
	srv, client := startServer(t, nil)
	tok, err := IssueJoinToken(srv.JoinTokenKey(), web, time.Minute, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	certify := func(c identityv1.IdentityClient, id meshid.ID, token []byte) (*identityv1.CertifyResponse, error) {
		return c.Certify(context.Background(), &identityv1.CertifyRequest{Identity: id.String(), Token: token, CertificateSigningRequest: makeCSR(t, key, id, nil)})
	}
	resp, err := certify(client, web, []byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certify(client, web, []byte(tok)); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("a single-use token's second use: %v", err)
	}
	if _, err := certify(client, web, nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token, no certificate: %v", err)
	}
	cert := &tls.Certificate{Certificate: append([][]byte{resp.LeafCertificate}, resp.IntermediateCertificates...), PrivateKey: key}
	tlsCfg := proxyid.ClientConfig(srv.CA().AnchorPool(), meshid.IdentityServiceID(meshid.DefaultTrustDomain),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	withCert := identityv1.NewIdentityClient(conn)
	if _, err := certify(withCert, web, nil); err != nil {
		t.Fatalf("renewal with the certificate: %v", err)
	}
	if _, err := certify(withCert, api, nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("web's certificate asking for api: %v", err)
	}
}
