package detect

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Routes are where the detect stage sends each kind of connection.
type Routes struct {
	HTTP   transport.Handler // HTTP/1 and h2c
	TLS    transport.Handler // a TLS ClientHello; Meta.SNI and Meta.ALPN say what it asked for
	Opaque transport.Handler // anything else
}

// Stage is the detect stage of a stack: connections skipOpaque picks (to
// opaque ports) go straight to the opaque route; the rest are peeked at and
// routed by what they speak. connect opens the early connection of
// server-first detection.
func Stage(d Detector, skipOpaque func(*transport.Meta) bool, connect transport.ConnectFunc, log *slog.Logger, r Routes) transport.Handler {
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		if skipOpaque(m) {
			m.Protocol = Opaque.String()
			r.Opaque.ServeConn(ctx, c)
			return
		}
		var dial DialFunc
		if m.Target != "" {
			dial = func(ctx context.Context) (net.Conn, error) { return connect(ctx, m) }
		}
		res, err := d.Detect(ctx, c, dial)
		if err != nil {
			log.Debug("connection closed during protocol detection", "direction", m.Direction, "client", m.Client.String(), "error", err)
			c.Close()
			return
		}
		m.Protocol, m.SNI, m.ALPN = res.Protocol.String(), res.Hello.SNI, res.Hello.ALPN
		if res.Upstream != nil {
			m.Early = res.Upstream
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

// ToOpaquePort selects connections whose target port is in ports.
func ToOpaquePort(ports map[uint16]bool) func(*transport.Meta) bool {
	return func(m *transport.Meta) bool { return ports[targetPort(m.Target)] }
}

func targetPort(addr string) uint16 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}
