package transport

import (
	"net"
	"net/netip"
	"sync"
)

// Limits bound the connections one listener serves at once: Max in all,
// PerSource from one client address (zero: no bound). A connection over a
// limit is closed as soon as it is accepted, so a flood of idle
// connections from one client can neither exhaust the proxy's file
// descriptors nor crowd out other clients.
type Limits struct {
	Max, PerSource int
}

// Refusal reasons.
const (
	RefusedMax       = "listener_limit"
	RefusedPerSource = "source_limit"
)

// limiter counts one listener's open connections.
type limiter struct {
	Limits
	mu    sync.Mutex
	open  int
	bySrc map[netip.Addr]int
}

func newLimiter(l Limits) *limiter { return &limiter{Limits: l, bySrc: map[netip.Addr]int{}} }

// admit counts a new connection from src, or says which limit refuses it.
func (l *limiter) admit(src netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.Max > 0 && l.open >= l.Max:
		return RefusedMax
	case l.PerSource > 0 && l.bySrc[src] >= l.PerSource:
		return RefusedPerSource
	}
	l.open++
	l.bySrc[src]++
	return ""
}

// release uncounts a connection from src.
func (l *limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySrc[src]--; l.bySrc[src] <= 0 {
		delete(l.bySrc, src)
	}
}

// LimitListener applies l to the connections ln accepts for a server that
// is not a transport.Server (the admin and tap servers): a connection over
// a limit is closed as accepted, and refused (if set) told why.
func LimitListener(ln net.Listener, l Limits, refused func(reason string, client netip.AddrPort)) net.Listener {
	return &limitListener{Listener: ln, lim: newLimiter(l), refused: refused}
}

type limitListener struct {
	net.Listener
	lim     *limiter
	refused func(reason string, client netip.AddrPort)
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := clientAddr(c)
		if reason := ll.lim.admit(src.Addr().Unmap()); reason != "" {
			// Counted before closed: a client that saw the close and
			// then reads the metrics finds its refusal counted.
			if ll.refused != nil {
				ll.refused(reason, src)
			}
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: sync.OnceFunc(func() { ll.lim.release(src.Addr().Unmap()) })}, nil
	}
}

// limitedConn uncounts itself once, when closed.
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// CloseWrite half-closes, as the server may before closing.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// clientAddr is the address c's client connected from (zero if not TCP).
func clientAddr(c net.Conn) netip.AddrPort {
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ra.AddrPort()
	}
	return netip.AddrPort{}
}
