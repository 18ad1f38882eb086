package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// JoinTokenKeyFile is the join-token signing key's file name in the data directory.
const JoinTokenKeyFile = "join-token-key.pem"

// Options configure `trellis-control identity`.
type Options struct {
	// Addr is where the gRPC Identity service listens (TLS).
	Addr string
	// AdminAddr serves /metrics, /ready and /live.
	AdminAddr string
	// TrustDomain is the trust domain identities are issued in.
	TrustDomain string
	// DataDir keeps a generated trust anchor, issuer and join-token key,
	// created on first start. Used unless the three PEM files are given.
	DataDir string
	// TrustAnchorPEM, IssuerCertPEM and IssuerKeyPEM are user-supplied
	// hierarchy files; all three or none.
	TrustAnchorPEM, IssuerCertPEM, IssuerKeyPEM string
	// ReloadInterval is how often those files are checked for a rotated
	// issuer (cert-manager renewing a Secret); 0: never.
	ReloadInterval time.Duration
	// LeafLifetime is how long issued certificates are valid.
	LeafLifetime time.Duration
	// JoinTokenKeyFile is the Ed25519 key that signs join tokens, created
	// if missing; <DataDir>/join-token-key.pem if empty.
	JoinTokenKeyFile string
	// ServerIdentity is the identity this service presents to proxies.
	ServerIdentity string
	// ExpiryWarning is how long before the issuer expires to start warning.
	ExpiryWarning time.Duration
	// RateLimit and RateBurst bound Certify calls per caller.
	RateLimit float64
	RateBurst int
	// ShutdownGracePeriod bounds waiting for in-flight calls on SIGTERM.
	ShutdownGracePeriod time.Duration
	// MaxStreams bounds the gRPC streams open at once, and
	// MaxStreamsPerConnection those of one connection.
	MaxStreams, MaxStreamsPerConnection int
	// NoCertify leaves the Certify API out: the server only serves the
	// services added to GRPC, with a certificate from the CA (the
	// destination component on its own).
	NoCertify bool
	// Validator, if set, checks proofs of identity instead of join tokens
	// (in Kubernetes: ServiceAccount tokens through TokenReview); no
	// join-token key is loaded then.
	Validator Validator
}

// Flags binds every option to fs with its default and documentation.
func (o *Options) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", ":8080", "address of the gRPC Identity service (TLS)")
	fs.StringVar(&o.AdminAddr, "admin-addr", ":9990", "address serving /metrics, /ready and /live")
	fs.StringVar(&o.TrustDomain, "trust-domain", meshid.DefaultTrustDomain, "trust domain of the identities issued: spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>")
	fs.StringVar(&o.DataDir, "data-dir", "", "directory keeping a generated trust anchor, issuer and join-token key (created on first start, keys mode 0600)")
	fs.StringVar(&o.TrustAnchorPEM, "trust-anchor-pem", "", "PEM file of the trust anchor certificate(s), instead of --data-dir's")
	fs.StringVar(&o.IssuerCertPEM, "issuer-cert-pem", "", "PEM file of the issuer certificate, optionally followed by intermediates up to the anchor")
	fs.StringVar(&o.IssuerKeyPEM, "issuer-key-pem", "", "PEM file of the issuer's private key")
	fs.DurationVar(&o.ReloadInterval, "reload-interval", 10*time.Second,
		"how often the --*-pem files are checked for a rotated issuer, loaded without a restart (0: never)")
	fs.DurationVar(&o.LeafLifetime, "leaf-lifetime", pki.DefaultLeafLifetime, "lifetime of issued proxy certificates (never beyond the issuer's expiry); proxies renew at 70%")
	fs.StringVar(&o.JoinTokenKeyFile, "join-token-key-file", "", "Ed25519 private key (PEM) that signs and verifies join tokens, created if missing (default <data-dir>/"+JoinTokenKeyFile+")")
	fs.StringVar(&o.ServerIdentity, "server-identity", "", "SPIFFE ID this service presents to proxies (default spiffe://<trust-domain>/ns/trellis/sa/trellis-identity)")
	fs.DurationVar(&o.ExpiryWarning, "issuer-expiry-warning", DefaultExpiryWarning, "log a warning when the issuer (or the trust anchor) expires within this long")
	fs.Float64Var(&o.RateLimit, "rate-limit", float64(DefaultRateLimit), "certificate requests per second allowed per identity")
	fs.IntVar(&o.RateBurst, "rate-burst", DefaultRateBurst, "certificate requests allowed in a burst per identity")
	fs.DurationVar(&o.ShutdownGracePeriod, "shutdown-grace-period", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	fs.IntVar(&o.MaxStreams, "max-streams", DefaultMaxStreams, "gRPC streams (proxies' discovery watches) served at once; more are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&o.MaxStreamsPerConnection, "max-streams-per-connection", DefaultMaxStreamsPerConnection, "gRPC streams one connection (one proxy) may open at once; more wait")
}

// validate checks o, naming the flag at fault.
func (o *Options) validate() (serverID meshid.ID, err error) {
	if _, err := meshid.New(o.TrustDomain, "x", "x"); err != nil {
		return serverID, fmt.Errorf("--trust-domain: %w", err)
	}
	for _, l := range []struct {
		flag  string
		v     *int
		deflt int
	}{{"--max-streams", &o.MaxStreams, DefaultMaxStreams}, {"--max-streams-per-connection", &o.MaxStreamsPerConnection, DefaultMaxStreamsPerConnection}} {
		switch {
		case *l.v == 0:
			*l.v = l.deflt
		case *l.v < 0:
			return serverID, fmt.Errorf("%s %d: must be positive", l.flag, *l.v)
		}
	}
	files := 0
	for _, f := range []string{o.TrustAnchorPEM, o.IssuerCertPEM, o.IssuerKeyPEM} {
		if f != "" {
			files++
		}
	}
	switch {
	case files != 0 && files != 3:
		return serverID, errors.New("--trust-anchor-pem, --issuer-cert-pem and --issuer-key-pem go together: give all three or none")
	case files == 0 && o.DataDir == "":
		return serverID, errors.New("no certificate authority: give --data-dir (a hierarchy is generated there on first start) or --trust-anchor-pem, --issuer-cert-pem and --issuer-key-pem")
	case o.Validator == nil && o.JoinTokenKeyFile == "" && o.DataDir == "":
		return serverID, errors.New("no join-token key: give --join-token-key-file or --data-dir")
	case o.LeafLifetime < time.Second:
		return serverID, fmt.Errorf("--leaf-lifetime %v: must be at least 1s", o.LeafLifetime)
	case o.RateLimit <= 0 || o.RateBurst < 1:
		return serverID, fmt.Errorf("--rate-limit %v / --rate-burst %d: must be positive", o.RateLimit, o.RateBurst)
	case o.ExpiryWarning <= 0:
		return serverID, fmt.Errorf("--issuer-expiry-warning %v: must be positive", o.ExpiryWarning)
	case o.ShutdownGracePeriod < 0:
		return serverID, fmt.Errorf("--shutdown-grace-period %v: must not be negative", o.ShutdownGracePeriod)
	}
	for flag, addr := range map[string]string{"--addr": o.Addr, "--admin-addr": o.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return serverID, fmt.Errorf("%s %q: %w", flag, addr, err)
		}
	}
	serverID = meshid.IdentityServiceID(o.TrustDomain)
	if o.ServerIdentity != "" {
		if serverID, err = meshid.Parse(o.ServerIdentity); err != nil {
			return serverID, fmt.Errorf("--server-identity: %w", err)
		}
	}
	return serverID, nil
}

// Server is a running-ready `trellis-control identity`: the CA loaded, the
// listeners bound.
type Server struct {
	opts     Options
	log      *slog.Logger
	tokenKey ed25519.PrivateKey
	svc      *Service
	grpc     *grpc.Server
	admin    *http.Server
	lis      net.Listener
	adminLis net.Listener
	ready    atomic.Bool
	self     selfCert
	metrics  *prometheus.Registry
}

// NewServer loads (or on first start generates) the hierarchy and the
// join-token key, and binds both listeners; a bind failure names the flag.
func NewServer(o Options, log *slog.Logger) (*Server, error) {
	serverID, err := o.validate()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var ca *pki.CA
	if o.TrustAnchorPEM != "" {
		if ca, err = pki.LoadFiles(o.TrustAnchorPEM, o.IssuerCertPEM, o.IssuerKeyPEM, now); err != nil {
			return nil, err
		}
		log.Info("using the supplied trust anchor and issuer", "trust_anchor", o.TrustAnchorPEM, "issuer", o.IssuerCertPEM)
	} else {
		var created bool
		if ca, created, err = pki.LoadOrCreateDir(o.DataDir, o.TrustDomain, now); err != nil {
			return nil, err
		}
		if created {
			log.Info("generated a trust anchor and issuer; give proxies the trust anchor", "trust_anchor", filepath.Join(o.DataDir, pki.AnchorFile))
		} else {
			log.Info("loaded the trust anchor and issuer", "dir", o.DataDir)
		}
	}
	validator, tokenKey := o.Validator, ed25519.PrivateKey(nil)
	if validator == nil {
		keyFile := o.JoinTokenKeyFile
		if keyFile == "" {
			keyFile = filepath.Join(o.DataDir, JoinTokenKeyFile)
		}
		var created bool
		if tokenKey, created, err = LoadOrCreateJoinTokenKey(keyFile); err != nil {
			return nil, err
		}
		if created {
			log.Info("generated the join-token key", "file", keyFile)
		}
		validator = &JoinTokenValidator{Keys: []ed25519.PublicKey{tokenKey.Public().(ed25519.PublicKey)}, TrustDomain: o.TrustDomain}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := New(Config{
		CA:          ca,
		TrustDomain: o.TrustDomain,
		Validator:   validator,
		// Join tokens (local mode) may be single-use: their proxies renew
		// with their certificates.
		RenewWithCertificate: tokenKey != nil,
		LeafLifetime:         o.LeafLifetime,
		RateLimit:            rate.Limit(o.RateLimit),
		RateBurst:            o.RateBurst,
		ExpiryWarning:        o.ExpiryWarning,
		Log:                  log,
		Metrics:              reg,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, log: log, metrics: reg, tokenKey: tokenKey, svc: svc, self: selfCert{ca: svc.CA, id: serverID, lifetime: o.LeafLifetime}}
	if _, err := s.self.get(nil); err != nil {
		return nil, fmt.Errorf("issuing the service's own certificate: %w", err)
	}
	// Client certificates are optional (a proxy asking for its first one
	// has none) and, when given, verified: services sharing this server
	// (registration) read the caller's identity from them.
	g := newGuard(o.MaxStreams, reg)
	// The trust anchors are the current hierarchy's: a reload may add one.
	base := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: s.self.get, ClientAuth: tls.VerifyClientCertIfGiven, NextProtos: []string{"h2"}}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = s.svc.CA().AnchorPool()
			return c, nil
		}})),
		grpc.MaxRecvMsgSize(64<<10), // a token and a CSR; a workload registration
		grpc.MaxConcurrentStreams(uint32(o.MaxStreamsPerConnection)),
		grpc.ChainUnaryInterceptor(g.unary),
		grpc.ChainStreamInterceptor(g.stream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(10*time.Second),
	)
	if !o.NoCertify {
		svc.Register(s.grpc)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("live\n")) })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	if s.lis, err = net.Listen("tcp", o.Addr); err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	if s.adminLis, err = net.Listen("tcp", o.AdminAddr); err != nil {
		s.lis.Close()
		return nil, fmt.Errorf("--admin-addr: %w", err)
	}
	return s, nil
}

// ClientCertificate is the service's own certificate for the connections
// it opens to proxies (tap): the control plane's identity.
func (s *Server) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.self.get(nil)
}

// Addr is the bound gRPC address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// AdminAddr is the bound admin address.
func (s *Server) AdminAddr() net.Addr { return s.adminLis.Addr() }

// GRPC is the server's gRPC server, to which other control-plane services
// may be added before Run (trellis-control all).
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Metrics is the registry /metrics on the admin address serves.
func (s *Server) Metrics() *prometheus.Registry { return s.metrics }

// CA is the hierarchy in use (the latest loaded, with --reload-interval).
func (s *Server) CA() *pki.CA { return s.svc.CA() }

// JoinTokenKey is the key that signs join tokens this server accepts.
func (s *Server) JoinTokenKey() ed25519.PrivateKey { return s.tokenKey }

// Close releases the listeners of a server that will not Run.
func (s *Server) Close() {
	s.lis.Close()
	s.adminLis.Close()
}

// Run serves until ctx ends, then stops accepting, waits up to the grace
// period for in-flight calls, and returns nil.
func (s *Server) Run(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.svc.WatchExpiry(watchCtx, time.Hour)
	if s.opts.TrustAnchorPEM != "" && s.opts.ReloadInterval > 0 {
		go s.watchFiles(watchCtx, s.opts.ReloadInterval)
	}

	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	go func() {
		if err := s.admin.Serve(s.adminLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	s.ready.Store(true)
	s.log.Info("identity service serving", "addr", s.lis.Addr().String(), "admin", s.adminLis.Addr().String(),
		"trust_domain", s.opts.TrustDomain, "server_identity", s.self.id.String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("identity service: %w", err)
	}
	s.ready.Store(false)
	s.log.Info("identity service shutting down", "grace_period", s.opts.ShutdownGracePeriod.String())
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.opts.ShutdownGracePeriod):
		s.grpc.Stop()
		<-stopped
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.admin.Shutdown(shutdownCtx)
	return err
}

// selfCert is the service's own serving certificate, issued by its CA and
// re-issued when 70% of its life has passed or the CA changes.
type selfCert struct {
	ca       func() *pki.CA
	id       meshid.ID
	lifetime time.Duration

	mu       sync.Mutex
	cert     *tls.Certificate
	issuedBy *pki.CA
	renewAt  time.Time
}

func (c *selfCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now, ca := time.Now(), c.ca()
	if c.cert != nil && now.Before(c.renewAt) && c.issuedBy == ca {
		return c.cert, nil
	}
	cert, err := ca.IssueTLS(c.id, c.lifetime, now)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep serving what we have
		}
		return nil, err
	}
	c.cert, c.issuedBy = cert, ca
	c.renewAt = now.Add(time.Duration(float64(cert.Leaf.NotAfter.Sub(now)) * 0.7))
	return c.cert, nil
}
