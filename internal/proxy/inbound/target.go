package inbound

import (
	"context"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// target sends a redirected connection to where it was going (the
// application, on the original port) and anything else to the app address.
// With an identity, plaintext connections are labelled as lacking one.
func target(appAddr string, hasIdentity bool) transport.Layer {
	return func(next transport.Handler) transport.Handler {
		return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
			m := transport.MetaFrom(ctx)
			if m.Redirected {
				m.Target = m.OrigDst.String()
			} else {
				m.Target = appAddr
			}
			if hasIdentity {
				m.TLS, m.NoTLSReason = "no_identity", "no_tls_from_remote"
			}
			next.ServeConn(ctx, c)
		})
	}
}
