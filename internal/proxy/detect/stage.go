package detect

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Dialer opens a connection to a target for the early server-first probe.
type Dialer interface {
	DialContext(ctx context.Context, dir transport.Direction, addr string) (*transport.MeteredConn, error)
}

// Stage is the detect stage of a stack: connections to opaque ports go
// straight to opaque; the rest are peeked at and go to http when they speak
// HTTP/1 or h2c, to opaque otherwise.
func Stage(d Detector, opaquePorts map[uint16]bool, dialer Dialer, log *slog.Logger, http, opaque transport.Handler) transport.Handler {
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		if opaquePorts[targetPort(m.Target)] {
			m.Protocol = Opaque.String()
			opaque.ServeConn(ctx, c)
			return
		}
		var dial DialFunc
		if m.Target != "" {
			dial = func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, m.Direction, m.Target) }
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
			http.ServeConn(ctx, res.Client)
		default:
			opaque.ServeConn(ctx, res.Client)
		}
	})
}

func targetPort(addr string) uint16 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}
