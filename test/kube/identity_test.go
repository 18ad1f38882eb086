package kube

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// certify asks the identity service in the cluster (through its ClusterIP,
// as a proxy would through the Service) for id's certificate with token.
func certify(t *testing.T, anchors, id string, token []byte) (*x509.Certificate, error) {
	t.Helper()
	resp, _, err := certifyKey(t, anchors, id, token)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(resp.GetLeafCertificate())
}

// certifyKey is certify that also returns the answer whole and the key.
func certifyKey(t *testing.T, anchors, id string, token []byte) (*identityv1.CertifyResponse, *ecdsa.PrivateKey, error) {
	t.Helper()
	conn := controlPlaneConn(t, anchors, "trellis-identity", 8080, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// kube-proxy programs a new Service's rules shortly after it exists:
	// wait for them (gRPC's WaitForReady), not for the answer.
	resp, err := identityv1.NewIdentityClient(conn).Certify(ctx, &identityv1.CertifyRequest{Identity: id, Token: token, CertificateSigningRequest: csr},
		grpc.WaitForReady(true))
	return resp, key, err
}

// controlPlaneConn is a gRPC connection to a control-plane Service's
// ClusterIP, verifying it as the control plane's identity, and presenting
// cert when it is not nil.
func controlPlaneConn(t *testing.T, anchors, service string, port int, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	svc, err := client.CoreV1().Services("trellis").Get(context.Background(), service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(anchors))
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
		// The service's certificate names its SPIFFE ID, not a host name.
		InsecureSkipVerify: true, VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyIdentityService(raw, pool)
		}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(port)), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func verifyIdentityService(raw [][]byte, pool *x509.CertPool) error {
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter}); err != nil {
		return err
	}
	if id, err := meshid.FromCertificate(leaf); err != nil || id != meshid.IdentityServiceID("cluster.local") {
		return status.Errorf(codes.Unauthenticated, "identity service presented %v (%v)", id, err)
	}
	return nil
}

func serviceAccountToken(t *testing.T, ns, sa string, audiences ...string) []byte {
	t.Helper()
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tr.Status.Token)
}

// craftedToken is a ServiceAccount token for ns/sa signed with the
// cluster's own ServiceAccount key, valid until exp.
func craftedToken(t *testing.T, ns, sa, uid string, exp time.Time) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(clusterDir, "pki", "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	enc := func(v any) string { j, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(j) }
	claims := map[string]any{"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:" + ns + ":" + sa,
		"aud": []string{meshid.TokenAudience}, "iat": now.Add(-20 * time.Minute).Unix(), "nbf": now.Add(-20 * time.Minute).Unix(),
		"exp": exp.Unix(), "kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa, "uid": uid}}}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(signing + "." + base64.RawURLEncoding.EncodeToString(sig))
}

// The identity service, running in the cluster, issues a ServiceAccount's
// identity for its projected token — checked with a TokenReview through
// the real API server — and refuses another ServiceAccount's token, an
// expired one and one for another audience.
func TestIdentityFromServiceAccountTokens(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	dropNamespaces(t, "idtest")
	kubectl(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: idtest}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: idtest}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: idtest}\n", "apply", "-f", "-")
	web := "spiffe://cluster.local/ns/idtest/sa/web"

	cert, err := certify(t, anchors, web, serviceAccountToken(t, "idtest", "web", meshid.TokenAudience))
	if err != nil {
		t.Fatalf("web's own projected token: %v", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != web {
		t.Fatalf("certificate for %v; want %s", cert.URIs, web)
	}
	sa, err := client.CoreV1().ServiceAccounts("idtest").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The same token but for its expiry is accepted: the expiry alone is
	// what is refused below.
	if _, err := certify(t, anchors, web, craftedToken(t, "idtest", "web", string(sa.UID), time.Now().Add(10*time.Minute))); err != nil {
		t.Fatalf("a token signed with the cluster's key, not expired: %v", err)
	}
	for _, tc := range []struct {
		name  string
		token []byte
		want  codes.Code
	}{
		{"another ServiceAccount's token", serviceAccountToken(t, "idtest", "api", meshid.TokenAudience), codes.PermissionDenied},
		{"an expired token", craftedToken(t, "idtest", "web", string(sa.UID), time.Now().Add(-time.Minute)), codes.Unauthenticated},
		{"a token for another audience", serviceAccountToken(t, "idtest", "web", "vault"), codes.Unauthenticated},
		{"no token", nil, codes.Unauthenticated},
	} {
		if _, err := certify(t, anchors, web, tc.token); status.Code(err) != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, err, tc.want)
		} else {
			t.Logf("%s: refused: %v", tc.name, strings.TrimSpace(status.Convert(err).Message()))
		}
	}
}
