package tap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultPort is the proxy's tap port, as in Linkerd.
const DefaultPort = 4190

// stopGrace bounds how long Stop waits for streams to finish sending.
const stopGrace = 2 * time.Second

// Credentials give the server the proxy's own certificate:
// internal/proxy/identity's Manager provides them. The configuration must
// require a client certificate and verify it against the trust anchors (as
// the Manager's does); the server then checks the identity it names.
type Credentials interface {
	ServerConfig() *tls.Config
}

// Server serves a Hub as the trellis.tap.v1.Tap service, over mutual TLS,
// to one identity.
type Server struct {
	tapv1.UnimplementedTapServer
	hub     *Hub
	allowed identity.ID
	log     *slog.Logger
	grpc    *grpc.Server
	quit    chan struct{}
	stop    sync.Once
}

// NewServer returns a server of hub that presents creds' certificate and
// admits only clients that prove allowed (normally
// identity.IdentityServiceID(trustDomain), the control plane).
func NewServer(hub *Hub, creds Credentials, allowed identity.ID, log *slog.Logger) (*Server, error) {
	if hub == nil || creds == nil {
		return nil, errors.New("tap: server needs a hub and credentials")
	}
	if err := allowed.Validate(); err != nil {
		return nil, fmt.Errorf("tap: allowed client identity: %w", err)
	}
	cfg := creds.ServerConfig()
	if cfg == nil {
		return nil, errors.New("tap: credentials have no server configuration")
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert && (cfg.ClientAuth != tls.RequireAnyClientCert || (cfg.VerifyConnection == nil && cfg.VerifyPeerCertificate == nil)) {
		return nil, errors.New("tap: the server TLS configuration must require and verify client certificates")
	}
	s := &Server{hub: hub, allowed: allowed, log: log, quit: make(chan struct{})}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg)),
		grpc.ChainStreamInterceptor(s.authorizeStream),
		grpc.ChainUnaryInterceptor(s.authorizeUnary),
		grpc.MaxRecvMsgSize(64<<10),
		grpc.MaxConcurrentStreams(uint32(hub.cfg.MaxSubscribers)+4),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	tapv1.RegisterTapServer(s.grpc, s)
	return s, nil
}

// Serve accepts connections on ln until Stop; it returns nil after Stop.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.grpc.Serve(ln); err != nil {
		return fmt.Errorf("tap: serving %s: %w", ln.Addr(), err)
	}
	return nil
}

// Stop ends every stream (UNAVAILABLE: the proxy is shutting down), waits
// briefly for them to say so, and closes the listener and connections.
func (s *Server) Stop() {
	s.stop.Do(func() {
		close(s.quit)
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.grpc.Stop()
			<-done
		}
	})
}

// Observe streams the events of the requests req selects until the client
// goes away or the server stops.
func (s *Server) Observe(req *tapv1.ObserveRequest, stream grpc.ServerStreamingServer[tapv1.TapEvent]) error {
	sub, err := s.hub.Subscribe(req)
	switch {
	case errors.Is(err, ErrTooManySubscribers):
		return status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer sub.Close()
	ctx := stream.Context()
	s.log.Debug("tap stream started", "client", clientID(ctx), "max_rps", sub.MaxRPS(), "method", req.GetMethod(),
		"path_prefix", req.GetPathPrefix(), "authority", req.GetAuthority(), "direction", req.GetDirection(), "to", req.GetTo())
	defer s.log.Debug("tap stream ended", "client", clientID(ctx))
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.quit:
			return status.Error(codes.Unavailable, "tap: the proxy is shutting down")
		case ev := <-sub.Events():
			if n := sub.TakeDropped(); n > 0 {
				if err := stream.Send(&tapv1.TapEvent{Dropped: n}); err != nil {
					return err
				}
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authorize(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// authorize admits the allowed identity only. The TLS configuration has
// verified the client's chain; here its identity is checked.
func (s *Server) authorize(ctx context.Context) error {
	id, err := peerID(ctx)
	if err != nil {
		s.log.Warn("tap refused", "reason", err)
		return status.Errorf(codes.PermissionDenied, "tap: %v; only %s may tap this proxy", err, s.allowed)
	}
	if id != s.allowed {
		s.log.Warn("tap refused", "client", id.String())
		return status.Errorf(codes.PermissionDenied, "tap: %s may not tap this proxy; only %s may", id, s.allowed)
	}
	return nil
}

// peerID is the identity the client's certificate names.
func peerID(ctx context.Context) (identity.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity.ID{}, errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return identity.ID{}, errors.New("no client certificate")
	}
	id, err := identity.FromCertificate(info.State.PeerCertificates[0])
	if err != nil {
		return identity.ID{}, fmt.Errorf("client certificate: %w", err)
	}
	return id, nil
}

// clientID is the client's identity for logs.
func clientID(ctx context.Context) string {
	id, err := peerID(ctx)
	if err != nil {
		return ""
	}
	return id.String()
}
