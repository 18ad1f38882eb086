package inbound

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// terminateMesh ends mTLS from peer proxies — TLS whose ClientHello offers
// the mesh ALPN — proving both identities, then reads the header that says
// which application port and protocol follow. Other TLS (the application's
// own) passes through untouched as opaque.
//
// allowed says which ports a peer may ask for: the application's, never
// the proxy's own (a loop, or a way around its loopback-only endpoints).
// A tunnel connection's streams are opaque connections each, served as
// one accepted from the peer would be.
func terminateMesh(creds mesh.Credentials, appHost func(*transport.Meta) string, allowed func(port uint16) bool, idle time.Duration, resetFlood func(), log *slog.Logger, http, opaque transport.Handler) transport.Handler {
	if creds == nil {
		return opaque
	}
	cfg := creds.ServerConfig().Clone()
	cfg.NextProtos = []string{mesh.ALPNTunnels, mesh.ALPN}
	tunnels := mesh.TunnelServer(allowed, func(ctx context.Context, port uint16, c net.Conn) {
		m := *transport.MetaFrom(ctx) // the tunnel connection's, per stream
		m.Target = net.JoinHostPort(appHost(&m), strconv.Itoa(int(port)))
		m.Protocol = "opaque"
		opaque.ServeConn(transport.WithMeta(ctx, &m), c)
	}, idle, func(net.Addr) { resetFlood() }, log)
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		if !slices.Contains(m.ALPN, mesh.ALPN) {
			opaque.ServeConn(ctx, c)
			return
		}
		if m.Early != nil {
			// Detection's early connection went to the port the client
			// dialled; the mesh header names the one it is for, and that
			// port's policy decides: never forward over the other.
			m.Early.Close()
			m.Early = nil
		}
		tc := tls.Server(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, mesh.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			log.Warn("mesh TLS handshake failed", "client", m.Client.String(), "error", err)
			c.Close()
			return
		}
		peer, err := identity.PeerID(tc.ConnectionState())
		if err != nil {
			log.Warn("mesh peer has no usable identity", "client", m.Client.String(), "error", err)
			tc.Close()
			return
		}
		tc.SetReadDeadline(time.Now().Add(mesh.HandshakeTimeout))
		h, err := mesh.ReadHeader(tc)
		tc.SetReadDeadline(time.Time{})
		if err != nil {
			log.Warn("mesh connection without a valid header", "client", m.Client.String(), "peer", peer.String(), "error", err)
			tc.Close()
			return
		}
		if h.Protocol == mesh.Tunnel {
			if tc.ConnectionState().NegotiatedProtocol != mesh.ALPNTunnels {
				log.Warn("mesh tunnel on a connection that did not negotiate "+mesh.ALPNTunnels+"; closed", "client", m.Client.String(), "peer", peer.String())
				tc.Close()
				return
			}
			m.TLS, m.NoTLSReason, m.ClientID = "true", "", peer.String()
			m.Protocol = "tunnel"
			tunnels.ServeConn(ctx, tc, m.Drain)
			return
		}
		if !allowed(h.Port) {
			log.Warn("mesh connection for a port that is not the application's; closed", "client", m.Client.String(), "peer", peer.String(), "port", h.Port)
			tc.Close()
			return
		}
		m.TLS, m.NoTLSReason, m.ClientID = "true", "", peer.String()
		m.Target = net.JoinHostPort(appHost(m), strconv.Itoa(int(h.Port)))
		switch h.Protocol {
		case mesh.HTTP2:
			m.Protocol = "h2"
			http.ServeConn(ctx, tc)
		case mesh.HTTP1:
			m.Protocol = "http/1"
			http.ServeConn(ctx, tc)
		default:
			m.Protocol = "opaque"
			opaque.ServeConn(ctx, tc)
		}
	})
}
