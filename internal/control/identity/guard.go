package identity

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
)

// Stream limits of the control plane's gRPC server: streams one
// connection (one proxy) may hold at once, and all connections together.
const (
	DefaultMaxStreamsPerConnection = 1024
	DefaultMaxStreams              = 50000
)

// guard is the gatekeeper of every call to the gRPC server: all but
// certificate issuance (which proves who the caller is) need a client
// certificate of the mesh, and streams are bounded.
type guard struct {
	maxStreams int64
	streams    atomic.Int64
	refused    *prometheus.CounterVec
}

func newGuard(maxStreams int, reg prometheus.Registerer) *guard {
	g := &guard{maxStreams: int64(maxStreams), refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "control_grpc_refused_total",
		Help: "gRPC calls the control plane refused before serving them: unauthenticated (no client certificate of the mesh), or over the stream limit.",
	}, []string{"reason"})}
	for _, r := range []string{"unauthenticated", "stream_limit"} {
		g.refused.WithLabelValues(r)
	}
	reg.MustRegister(g.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "control_grpc_streams",
		Help: "Streams open on the control plane's gRPC server (limit: --max-streams).",
	}, func() float64 { return float64(g.streams.Load()) }))
	return g
}

// authenticated refuses a call without a verified client certificate,
// unless it is certificate issuance.
func (g *guard) authenticated(ctx context.Context, method string) error {
	if method == identityv1.Identity_Certify_FullMethodName {
		return nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			return nil
		}
	}
	g.refused.WithLabelValues("unauthenticated").Inc()
	return status.Error(codes.Unauthenticated, "the control plane answers proxies of the mesh only: present a certificate it issued")
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := g.authenticated(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return next(ctx, req)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if err := g.authenticated(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if g.streams.Add(1) > g.maxStreams {
		g.streams.Add(-1)
		g.refused.WithLabelValues("stream_limit").Inc()
		return status.Errorf(codes.ResourceExhausted, "the control plane serves %d streams already (--max-streams); retry later", g.maxStreams)
	}
	defer g.streams.Add(-1)
	return next(srv, ss)
}
