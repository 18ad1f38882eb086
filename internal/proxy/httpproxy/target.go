package httpproxy

import (
	"context"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

type targetKey struct{}

// WithTarget sets the upstream for one request, overriding the connection's
// target (the forward proxy decides per request).
func WithTarget(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, targetKey{}, addr)
}

// Target is where a request goes: its own target if one was set, else its
// connection's.
func Target(ctx context.Context) string {
	if t, ok := ctx.Value(targetKey{}).(string); ok {
		return t
	}
	if m := transport.MetaFrom(ctx); m != nil {
		return m.Target
	}
	return ""
}
