package detect

import (
	"context"
	"log/slog"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Routes are where the detect stage sends each kind of connection.
type Routes struct {
	HTTP   transport.Handler // HTTP/1 and h2c
	TLS    transport.Handler // a TLS ClientHello; Meta.SNI and Meta.ALPN say what it asked for
	Opaque transport.Handler // anything else
}

// OpaquePolicy says how a connection to an opaque port is treated.
type OpaquePolicy int

// Opaque port policies.
const (
	// NotOpaque: detect the protocol.
	NotOpaque OpaquePolicy = iota
	// SkipDetection: opaque without reading a byte.
	SkipDetection
	// OpaqueUnlessTLS: opaque as soon as the first byte is not TLS, so
	// peer proxies' mTLS to the port is still recognised.
	OpaqueUnlessTLS
)

// Stage is the detect stage of a stack: opaque says how to treat each
// connection; the ones detected are routed by what they speak. connect
// opens the early connection of server-first detection.
func Stage(d Detector, opaque func(*transport.Meta) OpaquePolicy, connect transport.ConnectFunc, log *slog.Logger, r Routes) transport.Handler {
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		det := d // per connection: the policy may differ
		switch opaque(m) {
		case SkipDetection:
			m.Protocol = Opaque.String()
			r.Opaque.ServeConn(ctx, c)
			return
		case OpaqueUnlessTLS:
			det.OpaqueUnlessTLS = true
		}
		var dial DialFunc
		if m.Target != "" {
			dial = func(ctx context.Context) (net.Conn, error) { return connect(transport.Probe(ctx), m) }
		}
		dctx, done := untilDrain(ctx, m.Drain)
		res, err := det.Detect(dctx, c, dial)
		done()
		if err != nil {
			log.Debug("connection closed during protocol detection", "direction", m.Direction, "client", m.Client.String(), "error", err)
			c.Close()
			return
		}
		m.Protocol, m.SNI, m.ALPN = res.Protocol.String(), res.Hello.SNI, res.Hello.ALPN
		if res.Upstream != nil {
			m.Early = res.Upstream
			// Whatever the route does with it — forwards over it, or closes
			// the connection unforwarded (a denial, a failed mesh handshake)
			// — the early connection ends with this one: it was opened
			// before any policy looked, and must not outlive a refusal.
			defer res.Upstream.Close()
		}
		if res.TimedOut {
			log.Info("protocol detection timed out; proxying as opaque TCP", "direction", m.Direction, "client", m.Client.String(), "target", m.Target)
		}
		switch res.Protocol {
		case HTTP1, HTTP2:
			r.HTTP.ServeConn(ctx, res.Client)
		case TLS:
			r.TLS.ServeConn(ctx, res.Client)
		default:
			r.Opaque.ServeConn(ctx, res.Client)
		}
	})
}

// SkipOpaquePorts skips detection for connections whose target port is in
// ports.
func SkipOpaquePorts(ports map[uint16]bool) func(*transport.Meta) OpaquePolicy {
	return func(m *transport.Meta) OpaquePolicy {
		if ports[m.TargetPort()] {
			return SkipDetection
		}
		return NotOpaque
	}
}

// untilDrain is ctx, ended early when drain ends: a connection that has not
// said what it speaks by the time the proxy drains is closed, not waited
// for (it has sent nothing that was forwarded).
// done releases it.
func untilDrain(ctx, drain context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if drain == nil {
		return ctx, cancel
	}
	unregister := context.AfterFunc(drain, cancel)
	return ctx, func() {
		unregister()
		cancel()
	}
}
