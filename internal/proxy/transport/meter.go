package transport

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// Meter counts the accepted connection and its bytes in the tcp_* metrics
// (peer="src"), labelled with the connection's direction, target and TLS.
func Meter(reg *metrics.Registry) Layer {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, c net.Conn) {
			m := MetaFrom(ctx)
			t := reg.TCP(metrics.Labels{Direction: string(m.Direction), TargetAddr: m.Target, TLS: m.TLS, NoTLSReason: m.NoTLSReason, ClientID: m.ClientID}, "src")
			next.ServeConn(ctx, NewMeteredConn(c, t))
		})
	}
}

// MeteredConn counts bytes read and written, and the connection's open and
// close, on a TCP series.
type MeteredConn struct {
	net.Conn
	TCP  *metrics.TCP
	once sync.Once
}

// NewMeteredConn counts c as opened on t.
func NewMeteredConn(c net.Conn, t *metrics.TCP) *MeteredConn {
	t.Open()
	return &MeteredConn{Conn: c, TCP: t}
}

func (c *MeteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.TCP.Read(n)
	return n, err
}

func (c *MeteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.TCP.Write(n)
	return n, err
}

// Close closes the connection and counts it closed, once.
func (c *MeteredConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.TCP.Close(false, "") })
	return err
}

// Unwrap returns the underlying connection, for zero-copy forwarding that
// counts bytes itself.
func (c *MeteredConn) Unwrap() net.Conn { return c.Conn }

// CloseWrite half-closes the underlying connection, if it can be.
func (c *MeteredConn) CloseWrite() error { return CloseWrite(c.Conn) }

// CloseWrite half-closes c — sends FIN, or TLS close_notify — or the
// connection it wraps (Unwrap), if one of them can be half-closed.
func CloseWrite(c net.Conn) error {
	for {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return errors.ErrUnsupported
		}
		c = u.Unwrap()
	}
}
