package outbound

import (
	"context"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// originalDst targets a redirected connection at where the application was
// connecting. A connection made to the outbound port itself has no target:
// its requests say where they go (forward proxy).
func originalDst() transport.Layer {
	return func(next transport.Handler) transport.Handler {
		return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
			if m := transport.MetaFrom(ctx); m.Redirected {
				m.Target = m.OrigDst.String()
			}
			next.ServeConn(ctx, c)
		})
	}
}

// fixedTarget targets every connection at addr (an explicit upstream).
func fixedTarget(addr string) transport.Layer {
	return func(next transport.Handler) transport.Handler {
		return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
			transport.MetaFrom(ctx).Target = addr
			next.ServeConn(ctx, c)
		})
	}
}
