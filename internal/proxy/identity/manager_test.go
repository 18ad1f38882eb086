package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

func TestFirstCertificateAndMetrics(t *testing.T) {
	c := startControl(t, time.Hour)
	reg := metrics.NewRegistry()
	m := startManager(t, c, web, nil)
	m.RegisterMetrics(reg)
	waitReady(t, m)

	cert := m.Certificate()
	if cert == nil || cert.Leaf == nil {
		t.Fatal("ready without a certificate")
	}
	if got, err := meshid.FromCertificate(cert.Leaf); err != nil || got != web {
		t.Errorf("certificate names %v (%v)", got, err)
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], c.srv.CA().Issuer().Raw) {
		t.Errorf("chain has %d certificates; want leaf and issuer", len(cert.Certificate))
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() || !key.PublicKey.Equal(cert.Leaf.PublicKey) {
		t.Errorf("private key %T does not match the leaf", cert.PrivateKey)
	}
	for _, get := range []func() (*tls.Certificate, error){
		func() (*tls.Certificate, error) { return m.GetCertificate(nil) },
		func() (*tls.Certificate, error) { return m.GetClientCertificate(nil) },
	} {
		if got, err := get(); err != nil || got != cert {
			t.Errorf("Get*Certificate = %p, %v; want the current certificate", got, err)
		}
	}

	var buf bytes.Buffer
	if err := reg.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, buf.String())
	}
	exp := fams["identity_cert_expiration_timestamp_seconds"]
	if exp == nil || exp.GetType().String() != "GAUGE" || exp.GetMetric()[0].GetGauge().GetValue() != float64(cert.Leaf.NotAfter.Unix()) {
		t.Errorf("identity_cert_expiration_timestamp_seconds: %v; want %d", exp, cert.Leaf.NotAfter.Unix())
	}
	n := fams["identity_cert_refresh_total"]
	if n == nil || n.GetType().String() != "COUNTER" || n.GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Errorf("identity_cert_refresh_total: %v; want 1", n)
	}
	if !strings.Contains(buf.String(), "identity_cert_expiration_timestamp_seconds "+itoa(cert.Leaf.NotAfter.Unix())+"\n") {
		t.Errorf("expiry not rendered as a plain integer:\n%s", buf.String())
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("registering the same metric twice did not panic")
			}
		}()
		m.RegisterMetrics(reg)
	}()
}

func TestNotReadyWithoutCertificate(t *testing.T) {
	c := startControl(t, time.Hour)
	m := startManager(t, c, web, func(cfg *Config) { cfg.Token = StaticToken([]byte("not a token")) })
	select {
	case <-m.Ready():
		t.Fatal("ready with a bad token")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := m.GetCertificate(nil); err == nil {
		t.Error("GetCertificate served something before the first certificate")
	}
	if _, err := m.GetClientCertificate(nil); err == nil {
		t.Error("GetClientCertificate served something before the first certificate")
	}
}

func TestRenewsAt70PercentOfLifetime(t *testing.T) {
	c := startControl(t, time.Hour)
	clock := newFakeClock()
	m := startManager(t, c, web, func(cfg *Config) { cfg.After = clock.After })
	w := clock.next(t)
	first := m.Certificate()
	left := time.Until(first.Leaf.NotAfter)
	if want := time.Duration(float64(left) * 0.7); w.d < want-time.Second || w.d > want+time.Second {
		t.Fatalf("renewal scheduled in %v; want 70%% of %v = %v", w.d, left, want)
	}
	w.fire <- time.Now()
	w = clock.next(t)
	second := m.Certificate()
	if second == first || second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || m.Refreshes() != 2 {
		t.Fatalf("no new certificate after the renewal timer fired (refreshes %d)", m.Refreshes())
	}
	if second.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
		t.Error("renewal reused the private key")
	}
	if w.d < 41*time.Minute || w.d > 42*time.Minute {
		t.Errorf("next renewal in %v; want about 42m", w.d)
	}
}

func TestRefreshInIsClamped(t *testing.T) {
	m, err := New(Config{ID: web, TrustAnchors: x509.NewCertPool(), Token: StaticToken([]byte("x")), Addr: "x:1"})
	if err != nil {
		t.Fatal(err)
	}
	for left, want := range map[time.Duration]time.Duration{
		24 * time.Hour:   time.Duration(0.7 * float64(24*time.Hour)),
		30 * time.Second: 21 * time.Second,
		3 * time.Second:  10 * time.Second, // Linkerd's floor
		-time.Hour:       10 * time.Second,
		100 * time.Hour:  24 * time.Hour,
	} {
		if got := m.refreshIn(left); got != want {
			t.Errorf("refreshIn(%v) = %v; want %v", left, got, want)
		}
	}
	for n := 1; n < 100; n++ {
		d := min(DefaultBackoffMin<<min(n-1, 30), DefaultBackoffMax)
		if got := m.backoff(n); got < d/2 || got > d {
			t.Errorf("backoff(%d) = %v; want within [%v, %v]", n, got, d/2, d)
		}
	}
}

// TestRenewsInRealTime runs two proxies on 3-second certificates for about
// five seconds while new mTLS connections go between them continuously:
// every handshake must succeed across the rotations.
func TestRenewsInRealTime(t *testing.T) {
	c := startControl(t, 3*time.Second)
	fast := func(cfg *Config) { cfg.MinRefresh = 100 * time.Millisecond }
	client := startManager(t, c, web, fast)
	server := startManager(t, c, api, fast)
	waitReady(t, client)
	waitReady(t, server)
	addr, states := echoServer(t, server.ServerConfig())
	cfg := client.ClientConfig(api)

	seen := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	// Dial until both have renewed twice, and once more after that.
	for done := false; !done; {
		done = server.Refreshes() >= 3 && client.Refreshes() >= 3
		if time.Now().After(deadline) {
			t.Fatalf("only %d/%d refreshes in 15s", client.Refreshes(), server.Refreshes())
		}
		conn, err := dialTLS(addr, cfg)
		if err != nil {
			t.Fatalf("handshake during rotation failed: %v", err)
		}
		st := <-states
		seen[conn.ConnectionState().PeerCertificates[0].SerialNumber.String()] = true
		if id, _ := PeerID(st); id != web {
			t.Fatalf("server saw client %v", id)
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Errorf("clients saw %d distinct server certificates; want at least 3", len(seen))
	}
}

// A proxy whose join token is single-use spends it on its first
// certificate and renews with the certificate, reading no token again.
func TestSingleUseTokenRenewsWithCertificate(t *testing.T) {
	c := startControl(t, 3*time.Second)
	once := c.tokenOf(web, true)
	var reads atomic.Int32
	m := startManager(t, c, web, func(cfg *Config) {
		cfg.MinRefresh = 100 * time.Millisecond
		cfg.Token = func() ([]byte, error) { reads.Add(1); return once() }
	})
	waitReady(t, m)
	for deadline := time.Now().Add(15 * time.Second); m.Refreshes() < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d certificates in 15s", m.Refreshes())
		}
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("the token was read %d times for %d certificates; want once", n, m.Refreshes())
	}
}

func TestBackoffWhileControlPlaneDownThenRecovers(t *testing.T) {
	c := startControl(t, time.Hour)
	clock := newFakeClock()
	m := startManager(t, c, web, func(cfg *Config) { cfg.After = clock.After })
	w := clock.next(t)
	held := m.Certificate()

	c.stop()
	for n := 1; n <= 6; n++ {
		w.fire <- time.Now()
		w = clock.next(t)
		d := min(20*time.Millisecond<<(n-1), 200*time.Millisecond)
		if w.d < d/2 || w.d > d {
			t.Errorf("failure %d: retry in %v; want within [%v, %v]", n, w.d, d/2, d)
		}
		if m.Certificate() != held || m.Refreshes() != 1 {
			t.Fatal("the certificate changed while the control plane was down")
		}
	}

	c.start()
	for i := 0; m.Refreshes() == 1; i++ {
		if i == 500 {
			t.Fatal("no renewal within 500 retries after the control plane returned")
		}
		time.Sleep(10 * time.Millisecond)
		w.fire <- time.Now()
		w = clock.next(t)
	}
	if m.Certificate() == held {
		t.Error("refresh counted but certificate not swapped")
	}
	if w.d < 41*time.Minute {
		t.Errorf("after recovery the next renewal is in %v; want the 70%% schedule", w.d)
	}
}

// fakeIdentity answers Certify with whatever respond returns.
type fakeIdentity struct {
	respond func(req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error)
}

func (f fakeIdentity) Certify(_ context.Context, req *identityv1.CertifyRequest, _ ...grpc.CallOption) (*identityv1.CertifyResponse, error) {
	return f.respond(req)
}

func TestRefusesBadResponses(t *testing.T) {
	c := startControl(t, time.Hour)
	ca := c.srv.CA()
	issue := func(req *identityv1.CertifyRequest, id meshid.ID, lifetime time.Duration, now time.Time) *identityv1.CertifyResponse {
		csr, err := x509.ParseCertificateRequest(req.CertificateSigningRequest)
		if err != nil {
			t.Error(err)
			return nil
		}
		leaf, err := ca.Issue(csr, id, lifetime, now)
		if err != nil {
			t.Error(err)
			return nil
		}
		return &identityv1.CertifyResponse{LeafCertificate: leaf.Raw, IntermediateCertificates: ca.Chain()}
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}, otherKey)
	foreign := startControl(t, time.Hour)

	for name, respond := range map[string]func(*identityv1.CertifyRequest) (*identityv1.CertifyResponse, error){
		"another identity": func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			return issue(r, api, time.Hour, time.Now()), nil
		},
		"another key": func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			return issue(&identityv1.CertifyRequest{CertificateSigningRequest: otherCSR}, web, time.Hour, time.Now()), nil
		},
		"expired": func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			return issue(r, web, time.Hour, time.Now().Add(-2*time.Hour)), nil
		},
		"no intermediates": func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			resp := issue(r, web, time.Hour, time.Now())
			resp.IntermediateCertificates = nil
			return resp, nil
		},
		"another trust anchor": func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			csr, _ := x509.ParseCertificateRequest(r.CertificateSigningRequest)
			leaf, _ := foreign.srv.CA().Issue(csr, web, time.Hour, time.Now())
			return &identityv1.CertifyResponse{LeafCertificate: leaf.Raw, IntermediateCertificates: foreign.srv.CA().Chain()}, nil
		},
		"garbage": func(*identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			return &identityv1.CertifyResponse{LeafCertificate: []byte("junk")}, nil
		},
		"error": func(*identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
			return nil, errors.New("boom")
		},
	} {
		t.Run(name, func(t *testing.T) {
			clock := newFakeClock()
			var calls atomic.Int32
			m := startManager(t, c, web, func(cfg *Config) {
				cfg.After = clock.After
				cfg.Client = fakeIdentity{func(r *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
					calls.Add(1)
					if r.Identity != web.String() || len(r.Token) == 0 {
						t.Errorf("request: identity %q, token %d bytes", r.Identity, len(r.Token))
					}
					return respond(r)
				}}
			})
			w := clock.next(t)
			if w.d > DefaultBackoffMin || m.Certificate() != nil || m.Refreshes() != 0 || calls.Load() != 1 {
				t.Errorf("after a bad response: wait %v, certificate %v, refreshes %d, calls %d", w.d, m.Certificate() != nil, m.Refreshes(), calls.Load())
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	src := TokenFile(path)
	if _, err := src(); err == nil {
		t.Error("missing token file accepted")
	}
	os.WriteFile(path, []byte("  \n"), 0o600)
	if _, err := src(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	os.WriteFile(path, []byte("one\n"), 0o600)
	if b, err := src(); err != nil || string(b) != "one" {
		t.Errorf("token %q, %v", b, err)
	}
	os.WriteFile(path, []byte("two"), 0o600)
	if b, _ := src(); string(b) != "two" {
		t.Errorf("rotated token not re-read: %q", b)
	}
	if _, err := StaticToken(nil)(); err == nil {
		t.Error("empty static token accepted")
	}
}

func TestNewValidates(t *testing.T) {
	good := Config{ID: web, TrustAnchors: x509.NewCertPool(), Token: StaticToken([]byte("x")), Addr: "x:1"}
	for name, edit := range map[string]func(*Config){
		"no identity": func(c *Config) { c.ID = meshid.ID{} },
		"no anchors":  func(c *Config) { c.TrustAnchors = nil },
		"no token":    func(c *Config) { c.Token = nil },
		"no address":  func(c *Config) { c.Addr = "" },
	} {
		cfg := good
		edit(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, err := New(good)
	if err != nil || m.cfg.ServerID != meshid.IdentityServiceID("cluster.local") {
		t.Errorf("default server identity %v, %v", m.cfg.ServerID, err)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
