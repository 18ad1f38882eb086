package httpproxy

import (
	"context"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

type targetKey struct{}

type target struct{ addr, peer, dst string }

// WithTarget sets the upstream for one request, and the identity of the
// proxy in front of it if it is meshed, overriding the connection's (the
// forward proxy decides per request); dst is the endpoint's rendered metric
// labels (metrics.RenderDst), "" if discovery did not choose it.
func WithTarget(ctx context.Context, addr, peer, dst string) context.Context {
	return context.WithValue(ctx, targetKey{}, target{addr, peer, dst})
}

// Dst is the rendered metric labels of the endpoint a request goes to.
func Dst(ctx context.Context) string {
	t, _ := ctx.Value(targetKey{}).(target)
	return t.dst
}

// Target is where a request goes: its own target if one was set, else its
// connection's.
func Target(ctx context.Context) string {
	if t, ok := ctx.Value(targetKey{}).(target); ok {
		return t.addr
	}
	if m := transport.MetaFrom(ctx); m != nil {
		return m.Target
	}
	return ""
}

// Peer is the identity of the proxy in front of the request's target, or ""
// when the target is not meshed.
func Peer(ctx context.Context) string {
	if t, ok := ctx.Value(targetKey{}).(target); ok {
		return t.peer
	}
	if m := transport.MetaFrom(ctx); m != nil {
		return m.PeerIdentity
	}
	return ""
}

type routeKey struct{}

type routeInfo struct{ name, kind string }

// WithRoute records the route a request matched ("namespace/name" and
// HTTPRoute or GRPCRoute), for its metrics.
func WithRoute(ctx context.Context, name, kind string) context.Context {
	return context.WithValue(ctx, routeKey{}, routeInfo{name, kind})
}

// Route is the route a request matched, if any.
func Route(ctx context.Context) (name, kind string) {
	ri, _ := ctx.Value(routeKey{}).(routeInfo)
	return ri.name, ri.kind
}
