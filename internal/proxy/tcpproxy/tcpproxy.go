// Package tcpproxy forwards opaque TCP connections: bytes both ways, each
// direction half-closed when its sender finishes, with the kernel's splice
// doing the copying when both ends are plain TCP.
package tcpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Forwarder is the innermost stage for opaque connections: it connects to
// the connection's target (or adopts the connection detection opened early)
// and pipes the two together.
type Forwarder struct {
	Connect transport.ConnectFunc
	Log     *slog.Logger
}

// ErrDenied marks the error of a Connect that a policy refused: the
// connection is reset without a warning.
var ErrDenied = errors.New("denied by policy")

// ServeConn forwards c to its target. A target that cannot be reached resets
// the client connection, which is how TCP says "unreachable".
func (f *Forwarder) ServeConn(ctx context.Context, c net.Conn) {
	m := transport.MetaFrom(ctx)
	up := m.Early
	if up == nil {
		if m.Target == "" {
			f.Log.Warn("opaque connection has no target", "direction", m.Direction, "client", m.Client.String())
			reset(c)
			return
		}
		d, err := f.Connect(ctx, m)
		if errors.Is(err, ErrDenied) { // a policy's decision, counted where it is made
			f.Log.Debug("connection refused", "direction", m.Direction, "client", m.Client.String(), "target", m.Target, "error", err)
			reset(c)
			return
		}
		if err != nil {
			f.Log.Warn("connecting to target failed", "direction", m.Direction, "client", m.Client.String(), "target", m.Target, "error", err)
			reset(c)
			return
		}
		up = d
	}
	Pipe(c, up)
}

// reset closes c with an RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := unwrap(c).raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Pipe copies a→b and b→a until both directions finish, half-closing each
// direction when its source reaches EOF, then closes both. An error in either
// direction aborts both.
func Pipe(a, b net.Conn) {
	sa, sb := unwrap(a), unwrap(b)
	errc := make(chan error, 2)
	go func() { errc <- copyHalf(sb, sa) }()
	go func() { errc <- copyHalf(sa, sb) }()
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			// Abort: unblock the other direction too.
			reset(a)
			reset(b)
		}
	}
	a.Close()
	b.Close()
}

// side is one end of a pipe reduced to its raw connection, so TCP-to-TCP
// copies can use splice, plus whatever detection already read from it.
type side struct {
	raw    net.Conn
	prefix []byte
	tcp    *metrics.TCP
}

func unwrap(c net.Conn) side {
	var s side
	for {
		switch x := c.(type) {
		case *detect.Conn:
			p, inner := x.Unwrap()
			s.prefix = append(s.prefix, p...)
			c = inner
		case *transport.MeteredConn:
			if s.tcp == nil {
				s.tcp = x.TCP
			}
			c = x.Unwrap()
		case interface{ Unwrap() net.Conn }: // a transport.Socket: splice needs its TCP connection
			c = x.Unwrap()
		default:
			s.raw = c
			return s
		}
	}
}

// chunk bounds one splice so byte counters advance during long transfers.
const chunk = 1 << 20

// copyHalf copies src to dst until EOF, then half-closes dst.
func copyHalf(dst, src side) error {
	if len(src.prefix) > 0 {
		n, err := dst.raw.Write(src.prefix)
		count(dst, src, int64(n))
		if err != nil {
			return err
		}
	}
	for {
		n, err := io.CopyN(dst.raw, src.raw, chunk)
		count(dst, src, n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	// A failed half-close means the peer is gone; the other direction
	// will see that for itself.
	if cw, ok := dst.raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	return nil
}

func count(dst, src side, n int64) {
	if src.tcp != nil {
		src.tcp.Read(int(n))
	}
	if dst.tcp != nil {
		dst.tcp.Write(int(n))
	}
}
