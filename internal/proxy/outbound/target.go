package outbound

import (
	"context"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// originalDst targets a redirected connection at where the application was
// connecting. A connection made to the outbound port itself has no target:
// its requests say where they go (forward proxy).
func originalDst(p *peers) transport.Layer {
	return func(next transport.Handler) transport.Handler {
		return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
			if m := transport.MetaFrom(ctx); m.Redirected {
				m.Target = m.OrigDst.String()
				m.PeerIdentity = p.Lookup(m.Target)
			}
			next.ServeConn(ctx, c)
		})
	}
}

// fixedTarget targets every connection at addr (an explicit upstream),
// meshed with peer if that is set.
func fixedTarget(addr, peer string) transport.Layer {
	return func(next transport.Handler) transport.Handler {
		return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
			m := transport.MetaFrom(ctx)
			m.Target, m.PeerIdentity = addr, peer
			next.ServeConn(ctx, c)
		})
	}
}
