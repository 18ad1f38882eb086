// Package identity is the mesh's certificate authority service,
// `trellis-control identity`: proxies call Certify with a proof of who they
// are (a join token in local mode, a ServiceAccount token in Kubernetes mode)
// and a certificate signing request for their SPIFFE ID, and receive a
// short-lived leaf certificate signed by the issuer.
//
// The service checks, in order: the requested identity is a SPIFFE ID of its
// trust domain (else InvalidArgument); the proof is valid (else
// Unauthenticated, or Unavailable if it could not be checked); the caller
// has not asked too often (else ResourceExhausted); the proof entitles the
// caller to the requested identity (else PermissionDenied); the CSR names
// exactly that identity and nothing else (else InvalidArgument). Proofs are
// checked by a Validator (join tokens here, TokenReview through a small
// interface). It exports the issuer's and the trust anchor's expiry and
// warns well before the issuer expires, because an expired issuer stops
// every proxy from renewing: a mesh-wide outage.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Defaults of the service.
const (
	// DefaultRateLimit and DefaultRateBurst bound Certify calls per proven
	// identity. Replicas of one workload share an identity, so the burst
	// lets a rollout of dozens of replicas through at once.
	DefaultRateLimit = rate.Limit(5)
	DefaultRateBurst = 50
	// DefaultExpiryWarning is how long before the issuer (or anchor) expires
	// the service starts warning.
	DefaultExpiryWarning = 60 * 24 * time.Hour
)

// Config is what a Service needs.
type Config struct {
	// CA signs the leaves (SetCA replaces it).
	CA *pki.CA
	// TrustDomain is the only trust domain the service issues for.
	TrustDomain string
	// Validator checks proofs of identity. If it also spends tokens (a
	// single-use join token), a token is spent by the certificate it gets.
	Validator Validator
	// RenewWithCertificate lets a proxy that presents a valid certificate
	// of the mesh on the connection renew that identity without a token
	// (local mode: join tokens are spent by the first certificate). In
	// Kubernetes every request carries the ServiceAccount token, so that a
	// deleted ServiceAccount ends the identity.
	RenewWithCertificate bool
	// LeafLifetime is how long issued leaves are valid (never beyond the
	// issuer); pki.DefaultLeafLifetime if zero.
	LeafLifetime time.Duration
	// RateLimit (per second) and RateBurst bound Certify calls per caller;
	// DefaultRateLimit and DefaultRateBurst if zero.
	RateLimit rate.Limit
	RateBurst int
	// ExpiryWarning is how long before expiry CheckExpiry warns;
	// DefaultExpiryWarning if zero.
	ExpiryWarning time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log receives an audit line per issued certificate and every refusal.
	Log *slog.Logger
	// Metrics, if set, receives the service's metrics.
	Metrics prometheus.Registerer
}

// Service implements the Identity gRPC service.
type Service struct {
	identityv1.UnimplementedIdentityServer
	cfg     Config
	ca      atomic.Pointer[pki.CA]
	limiter *limiter
	certify *prometheus.CounterVec
}

// CA is the hierarchy the service issues from.
func (s *Service) CA() *pki.CA { return s.ca.Load() }

// SetCA makes the service issue from ca from now on: a rotated issuer.
func (s *Service) SetCA(ca *pki.CA) { s.ca.Store(ca) }

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.CA == nil {
		return nil, errors.New("identity service: no CA")
	}
	if cfg.Validator == nil {
		return nil, errors.New("identity service: no proof validator")
	}
	if _, err := meshid.New(cfg.TrustDomain, "x", "x"); err != nil {
		return nil, fmt.Errorf("identity service: %w", err)
	}
	if cfg.LeafLifetime <= 0 {
		cfg.LeafLifetime = pki.DefaultLeafLifetime
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = DefaultRateBurst
	}
	if cfg.ExpiryWarning <= 0 {
		cfg.ExpiryWarning = DefaultExpiryWarning
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg:     cfg,
		limiter: newLimiter(cfg.RateLimit, cfg.RateBurst),
		certify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_certify_total",
			Help: "Certify calls by gRPC status code.",
		}, []string{"code"}),
	}
	s.ca.Store(cfg.CA)
	if cfg.Metrics != nil {
		issuer := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_issuer_expiration_timestamp_seconds",
			Help: "When the issuer certificate (or a certificate above it) expires, in Unix seconds. After it, no proxy can renew: rotate the issuer well before.",
		}, func() float64 { return float64(s.CA().NotAfter().Unix()) })
		anchor := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_trust_anchor_expiration_timestamp_seconds",
			Help: "When the trust anchor the issuer chains to expires, in Unix seconds.",
		}, func() float64 { return float64(s.CA().Anchor().NotAfter.Unix()) })
		for _, c := range []prometheus.Collector{s.certify, issuer, anchor} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("identity service metrics: %w", err)
			}
		}
	}
	for _, c := range []codes.Code{codes.OK, codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted, codes.Unavailable, codes.Internal} {
		s.certify.WithLabelValues(c.String())
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { identityv1.RegisterIdentityServer(r, s) }

// Certify implements identityv1.IdentityServer.
func (s *Service) Certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	resp, id, err := s.certifyRequest(ctx, req)
	code := status.Code(err)
	s.certify.WithLabelValues(code.String()).Inc()
	from := ""
	if p, ok := peer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	if err != nil {
		level := slog.LevelWarn
		if code == codes.ResourceExhausted {
			level = slog.LevelDebug
		}
		s.cfg.Log.Log(ctx, level, "certify refused", "identity", req.GetIdentity(), "peer", from, "code", code.String(), "reason", status.Convert(err).Message())
		return nil, err
	}
	s.cfg.Log.Info("certificate issued", "identity", id.String(), "peer", from,
		"valid_until", resp.ValidUntil.AsTime().UTC().Format(time.RFC3339))
	return resp, nil
}

// spender is a Validator whose tokens may be good for one certificate.
type spender interface {
	Spend(token []byte, now time.Time) error
}

// prove checks the caller's proof of identity: its token, or without one
// (RenewWithCertificate) the valid mesh certificate it presented.
func (s *Service) prove(ctx context.Context, token []byte) (meshid.ID, error) {
	if len(token) > 0 {
		proven, err := s.cfg.Validator.Validate(ctx, token)
		switch {
		case errors.Is(err, ErrInvalidToken):
			return proven, status.Error(codes.Unauthenticated, err.Error())
		case err != nil:
			return proven, status.Errorf(codes.Unavailable, "the token could not be checked: %v", err)
		}
		return proven, nil
	}
	if s.cfg.RenewWithCertificate {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
				leaf := info.State.VerifiedChains[0][0]
				if id, err := meshid.FromCertificate(leaf); err == nil && s.cfg.Now().Before(leaf.NotAfter) {
					return id, nil
				}
			}
		}
		return meshid.ID{}, status.Error(codes.Unauthenticated, "no token and no valid certificate of the mesh: a join token is required")
	}
	return meshid.ID{}, status.Error(codes.Unauthenticated, "no token: a join token or ServiceAccount token is required")
}

func (s *Service) certifyRequest(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, meshid.ID, error) {
	want, err := meshid.Parse(req.GetIdentity())
	if err != nil {
		return nil, want, status.Error(codes.InvalidArgument, err.Error())
	}
	if want.TrustDomain != s.cfg.TrustDomain {
		return nil, want, status.Errorf(codes.InvalidArgument, "identity %s is in trust domain %q; this identity service issues for %q", want, want.TrustDomain, s.cfg.TrustDomain)
	}
	proven, err := s.prove(ctx, req.GetToken())
	if err != nil {
		return nil, want, err
	}
	now := s.cfg.Now()
	if !s.limiter.allow(proven.String(), now) {
		return nil, want, status.Errorf(codes.ResourceExhausted, "too many certificate requests for %s; retry with backoff", proven)
	}
	if proven != want {
		return nil, want, status.Errorf(codes.PermissionDenied, "the token proves %s, not the requested %s", proven, want)
	}
	csr, err := CheckCSR(req.GetCertificateSigningRequest(), want)
	if err != nil {
		return nil, want, status.Error(codes.InvalidArgument, err.Error())
	}
	if sp, ok := s.cfg.Validator.(spender); ok && len(req.GetToken()) > 0 {
		if err := sp.Spend(req.GetToken(), now); err != nil {
			return nil, want, status.Error(codes.Unauthenticated, err.Error())
		}
	}
	ca := s.CA()
	leaf, err := ca.Issue(csr, want, s.cfg.LeafLifetime, now)
	if err != nil {
		return nil, want, status.Errorf(codes.Internal, "issuing: %v", err)
	}
	return &identityv1.CertifyResponse{
		LeafCertificate:          leaf.Raw,
		IntermediateCertificates: ca.Chain(),
		ValidUntil:               timestamppb.New(leaf.NotAfter),
	}, want, nil
}

// CheckExpiry logs a warning if the issuer (or a certificate above it,
// including the trust anchor) expires within the configured warning period,
// and an error if it has expired. It reports the time left.
func (s *Service) CheckExpiry() time.Duration {
	now := s.cfg.Now()
	ca := s.CA()
	left := ca.NotAfter().Sub(now)
	attrs := []any{"issuer", ca.Issuer().Subject.String(), "expires", ca.NotAfter().UTC().Format(time.RFC3339),
		"anchor_expires", ca.Anchor().NotAfter.UTC().Format(time.RFC3339)}
	switch {
	case left <= 0:
		s.cfg.Log.Error("the issuer has EXPIRED: proxies can no longer renew certificates and mTLS fails as their certificates expire; install a new issuer now", attrs...)
	case left < s.cfg.ExpiryWarning:
		s.cfg.Log.Warn(fmt.Sprintf("the issuer expires in %d days: rotate it before then, or every proxy loses mTLS when its certificate lapses", int(left.Hours()/24)),
			append(attrs, "left", left.Round(time.Minute).String())...)
	}
	return left
}

// WatchExpiry runs CheckExpiry now and then every interval until ctx ends.
func (s *Service) WatchExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.CheckExpiry()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
