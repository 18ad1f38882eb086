// Package identity is the proxy's side of workload identity: it obtains and
// renews the proxy's certificate from the identity service and builds the
// TLS configurations with which proxies authenticate each other.
//
// A Manager generates its ECDSA P-256 private key in memory (never written,
// never sent), sends a certificate signing request for its SPIFFE ID with a
// proof of identity (a join token or ServiceAccount token), and keeps the
// returned chain as the current tls.Certificate. It renews at 70% of the
// remaining lifetime (clamped to [10 s, 24 h], as Linkerd does), retries
// failures with jittered exponential backoff while serving with the
// certificate it has, and swaps certificates atomically: handshakes pick up
// the new one, established connections are untouched.
//
// ServerConfig and ClientConfig are TLS 1.3-only configurations that verify
// the peer's chain against the trust anchors and, on the connecting side,
// that the peer is the identity expected. This package stays lean: no
// Kubernetes or Prometheus client code.
package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// Defaults of a Manager.
const (
	// RefreshRatio is the share of a certificate's remaining lifetime after
	// which it is renewed.
	RefreshRatio = 0.7
	// DefaultMinRefresh and DefaultMaxRefresh clamp the time to renewal.
	DefaultMinRefresh = 10 * time.Second
	DefaultMaxRefresh = 24 * time.Hour
	// DefaultBackoffMin and DefaultBackoffMax bound the wait after a failed
	// request; it doubles per consecutive failure, jittered to [d/2, d].
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
	// DefaultRequestTimeout bounds one Certify call.
	DefaultRequestTimeout = 10 * time.Second
)

// Config is what a Manager needs.
type Config struct {
	// ID is this proxy's identity.
	ID meshid.ID
	// TrustAnchors verify the identity service and every peer.
	TrustAnchors *x509.CertPool
	// Token returns the proof of identity, before each request.
	Token TokenSource

	// Addr is the identity service's host:port. Ignored if Client is set.
	Addr string
	// ServerID is the identity the identity service must present;
	// meshid.IdentityServiceID(ID.TrustDomain) if zero.
	ServerID meshid.ID
	// Dial, if set, opens connections to Addr (tests, network namespaces).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Client, if set, is used instead of dialling Addr.
	Client identityv1.IdentityClient

	// MinRefresh and MaxRefresh clamp the time to renewal; the defaults if zero.
	MinRefresh, MaxRefresh time.Duration
	// BackoffMin and BackoffMax bound retry waits; the defaults if zero.
	BackoffMin, BackoffMax time.Duration
	// RequestTimeout bounds one Certify call; the default if zero.
	RequestTimeout time.Duration

	// Now and After are the clock; time.Now and time.After if nil.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Log receives renewals and failures.
	Log *slog.Logger
}

// Manager obtains, renews and serves the proxy's certificate.
type Manager struct {
	cfg Config
	// renewer, once set, asks for a renewal over a connection presenting
	// the current certificate, without a token: a join token may have
	// been good for the first certificate only.
	renewer   func() (identityv1.IdentityClient, func(), error)
	byCert    bool // the first certificate came with a join token
	cert      atomic.Pointer[tls.Certificate]
	expiry    atomic.Int64 // current leaf's NotAfter, Unix seconds; 0 before the first
	refreshes atomic.Uint64
	ready     chan struct{}
	readyOnce sync.Once
}

// New validates cfg and returns a Manager; Run obtains the certificates.
func New(cfg Config) (*Manager, error) {
	if err := cfg.ID.Validate(); err != nil {
		return nil, fmt.Errorf("proxy identity: %w", err)
	}
	if cfg.TrustAnchors == nil {
		return nil, errors.New("proxy identity: no trust anchors")
	}
	if cfg.Token == nil {
		return nil, errors.New("proxy identity: no token source")
	}
	if cfg.Client == nil && cfg.Addr == "" {
		return nil, errors.New("proxy identity: no identity service address")
	}
	if cfg.ServerID.IsZero() {
		cfg.ServerID = meshid.IdentityServiceID(cfg.ID.TrustDomain)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MinRefresh, DefaultMinRefresh)
	def(&cfg.MaxRefresh, DefaultMaxRefresh)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.RequestTimeout, DefaultRequestTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, ready: make(chan struct{})}, nil
}

// ID returns the proxy's identity.
func (m *Manager) ID() meshid.ID { return m.cfg.ID }

// TrustAnchors returns the pool peers are verified against.
func (m *Manager) TrustAnchors() *x509.CertPool { return m.cfg.TrustAnchors }

// Ready is closed when the first certificate has arrived.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Certificate returns the current certificate (leaf, then intermediates,
// with its key), or nil before the first arrives.
func (m *Manager) Certificate() *tls.Certificate { return m.cert.Load() }

// GetCertificate serves the current certificate; for tls.Config.GetCertificate.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no identity certificate yet")
}

// GetClientCertificate serves the current certificate; for
// tls.Config.GetClientCertificate.
func (m *Manager) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no identity certificate yet")
}

// ServerConfig is ServerConfig with this proxy's certificate and anchors.
func (m *Manager) ServerConfig() *tls.Config {
	return ServerConfig(m.cfg.TrustAnchors, m.GetCertificate)
}

// ClientConfig is ClientConfig with this proxy's certificate and anchors,
// for connections to a peer that must be expected.
func (m *Manager) ClientConfig(expected meshid.ID) *tls.Config {
	return ClientConfig(m.cfg.TrustAnchors, expected, m.GetClientCertificate)
}

// ExpiresAt returns the current certificate's expiry (zero before the first).
func (m *Manager) ExpiresAt() time.Time {
	if s := m.expiry.Load(); s != 0 {
		return time.Unix(s, 0)
	}
	return time.Time{}
}

// Refreshes returns how many certificates have been obtained.
func (m *Manager) Refreshes() uint64 { return m.refreshes.Load() }

// RegisterMetrics exports identity_cert_expiration_timestamp_seconds and
// identity_cert_refresh_total in r (Linkerd's names, but for the _total
// suffix promtool's lint asks of a counter).
func (m *Manager) RegisterMetrics(r *metrics.Registry) {
	r.Gauge("identity_cert_expiration_timestamp_seconds",
		"Time when this proxy's current mTLS identity certificate will expire (in seconds since the UNIX epoch).",
		func() float64 { return float64(m.expiry.Load()) })
	r.Counter("identity_cert_refresh_total",
		"The total number of times this proxy's mTLS identity certificate has been refreshed by the Identity service.",
		func() float64 { return float64(m.refreshes.Load()) })
}

// Run obtains the first certificate and keeps renewing it until ctx ends.
// Failures are logged and retried; it returns only when ctx is done (nil) or
// the identity service address is unusable.
func (m *Manager) Run(ctx context.Context) error {
	client := m.cfg.Client
	if client == nil {
		dial := func(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*grpc.ClientConn, error) {
			opts := []grpc.DialOption{
				grpc.WithTransportCredentials(credentials.NewTLS(ClientConfig(m.cfg.TrustAnchors, m.cfg.ServerID, getCert))),
				// Reconnect about as eagerly as Run retries, so a returning
				// identity service is found on the next attempt.
				grpc.WithConnectParams(grpc.ConnectParams{
					Backoff:           backoff.Config{BaseDelay: m.cfg.BackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: m.cfg.BackoffMax},
					MinConnectTimeout: m.cfg.RequestTimeout,
				}),
			}
			target := m.cfg.Addr
			if m.cfg.Dial != nil {
				opts = append(opts, grpc.WithContextDialer(m.cfg.Dial))
				target = "passthrough:///" + target
			}
			return grpc.NewClient(target, opts...)
		}
		conn, err := dial(nil)
		if err != nil {
			return fmt.Errorf("identity service address %q: %w", m.cfg.Addr, err)
		}
		defer conn.Close()
		client = identityv1.NewIdentityClient(conn)
		// A fresh connection per renewal: the certificate it presents is
		// the current one.
		m.renewer = func() (identityv1.IdentityClient, func(), error) {
			c, err := dial(m.GetClientCertificate)
			if err != nil {
				return nil, nil, err
			}
			return identityv1.NewIdentityClient(c), func() { c.Close() }, nil
		}
	}
	failures := 0
	for {
		validUntil, err := m.certify(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = m.backoff(failures)
			attrs := []any{"identity", m.cfg.ID.String(), "error", err, "retry_in", wait.Round(time.Millisecond).String(), "failures", failures}
			if exp := m.ExpiresAt(); !exp.IsZero() {
				attrs = append(attrs, "current_expires_in", exp.Sub(m.cfg.Now()).Round(time.Second).String())
			}
			m.cfg.Log.Warn("identity certificate request failed; serving with the current certificate", attrs...)
		} else {
			failures = 0
			wait = m.refreshIn(validUntil.Sub(m.cfg.Now()))
			m.cfg.Log.Info("identity certificate obtained", "identity", m.cfg.ID.String(),
				"valid_until", validUntil.UTC().Format(time.RFC3339), "refresh_in", wait.Round(time.Millisecond).String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.cfg.After(wait):
		}
	}
}

// refreshIn is when to renew a certificate valid for left more.
func (m *Manager) refreshIn(left time.Duration) time.Duration {
	d := time.Duration(float64(left) * RefreshRatio)
	return min(max(d, m.cfg.MinRefresh), m.cfg.MaxRefresh)
}

// backoff is the wait after the n-th consecutive failure: BackoffMin·2^(n-1),
// at most BackoffMax, jittered uniformly into its upper half.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.BackoffMax
	if n < 31 {
		d = min(m.cfg.BackoffMin<<(n-1), m.cfg.BackoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// certify makes one request and, if it yields a good certificate, installs it.
func (m *Manager) certify(ctx context.Context, client identityv1.IdentityClient) (time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return time.Time{}, err
	}
	csr, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.cfg.ID.URL()}}, key)
	if err != nil {
		return time.Time{}, err
	}
	var token []byte
	if cur := m.cert.Load(); m.byCert && m.renewer != nil && m.cfg.Now().Before(cur.Leaf.NotAfter) {
		renewing, done, err := m.renewer()
		if err != nil {
			return time.Time{}, err
		}
		defer done()
		client = renewing
	} else if token, err = m.cfg.Token(); err != nil {
		return time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	resp, err := client.Certify(ctx, &identityv1.CertifyRequest{
		Identity:                  m.cfg.ID.String(),
		Token:                     token,
		CertificateSigningRequest: csr,
	})
	if err != nil {
		return time.Time{}, err
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return time.Time{}, fmt.Errorf("identity service returned a bad leaf: %w", err)
	}
	chain := []*x509.Certificate{leaf}
	der := [][]byte{leaf.Raw}
	for i, b := range resp.GetIntermediateCertificates() {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return time.Time{}, fmt.Errorf("identity service returned a bad intermediate %d: %w", i+1, err)
		}
		chain = append(chain, c)
		der = append(der, b)
	}
	// Check everything a peer will check before serving it.
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return time.Time{}, errors.New("identity service returned a certificate for another key")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		got, err := VerifyPeer(m.cfg.TrustAnchors, chain, usage, m.cfg.Now())
		if err != nil {
			return time.Time{}, fmt.Errorf("identity service returned a certificate that does not verify: %w", err)
		}
		if got != m.cfg.ID {
			return time.Time{}, fmt.Errorf("identity service returned a certificate for %s, not %s", got, m.cfg.ID)
		}
	}
	m.cert.Store(&tls.Certificate{Certificate: der, PrivateKey: key, Leaf: leaf})
	if bytes.HasPrefix(token, []byte(meshid.JoinTokenPrefix)) {
		m.byCert = true // join tokens may be single-use; ServiceAccount tokens go with every request
	}
	m.expiry.Store(leaf.NotAfter.Unix())
	m.refreshes.Add(1)
	m.readyOnce.Do(func() { close(m.ready) })

	validUntil := leaf.NotAfter
	if v := resp.GetValidUntil(); v != nil && v.IsValid() && v.AsTime().Before(validUntil) {
		validUntil = v.AsTime()
	}
	return validUntil, nil
}
