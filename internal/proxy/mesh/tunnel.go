package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// A Tunnel session carries opaque connections between two proxies as
// HTTP/2 CONNECT streams of one mTLS connection, as HBONE does between
// ztunnels: opening a connection costs a stream (a HEADERS frame each way)
// instead of a TCP and TLS handshake, whose key exchange was three
// quarters of a new meshed connection's CPU. Bytes are DATA frames under
// HTTP/2's flow control, one direction's end is END_STREAM (TCP's FIN),
// an abort RST_STREAM (TCP's RST). The price: a tunnel's connections
// share its fate — a peer that stops answering PINGs, or a GOAWAY, ends
// them all, where each had been on its own.

// tunnels is a Dialer's tunnel connections, and the peers found not to
// take them.
type tunnels struct {
	once  sync.Once
	pool  *h2.Pool[tunnelKey]
	mu    sync.Mutex
	older map[tunnelKey]time.Time // peers that chose ALPN over ALPNTunnels, and when
}

// tunnelKey is a peer proxy: one pool of tunnel connections each.
type tunnelKey struct {
	dir  transport.Direction
	addr string // its mesh address
	peer identity.ID
}

// ErrPeerRefused is a connection the peer proxy would not take: it
// answered, but its application was unreachable, a policy denied the
// connection, or its limits were reached. It says nothing of the peer's
// health: not a failure of the endpoint.
var ErrPeerRefused = errors.New("mesh: the peer proxy refused the connection")

// errNoTunnels is a peer that does not take tunnels.
var errNoTunnels = errors.New("mesh: the peer proxy takes no tunnels")

// A tunnel's flow-control windows. A stream's bounds what one connection
// whose reader lags holds buffered (256 KiB: 256 MB/s per stream at a
// 1 ms round trip); the connection's, far above it, is what it takes for
// lagging streams to stall the others, and bounds a tunnel's buffers.
const (
	tunnelStreamWindow = 256 << 10
	tunnelConnWindow   = 32 << 20
	// tunnelMaxStreams keeps lagging streams from stalling a tunnel: all
	// of them full take half its window, leaving the rest for the others
	// and for window updates held back in batches (a quarter window).
	// Beyond it the dialer opens another tunnel connection.
	tunnelMaxStreams = tunnelConnWindow / 2 / tunnelStreamWindow
	// tunnelClientStreams is what a dialer opens on a tunnel: below the
	// server's limit, which counts a stream until its connection is torn
	// down, a moment after the dialer saw it end.
	tunnelClientStreams = tunnelMaxStreams * 3 / 4
)

// olderPeerRetry is how long opaque connections to a peer that chose ALPN
// go without tunnels before it is asked again (it may have been upgraded).
const olderPeerRetry = 5 * time.Minute

// tunnel opens a stream to target's port on a tunnel connection to key's
// proxy, or fails with errNoTunnels for a peer that takes none.
func (d *Dialer) tunnel(ctx context.Context, key tunnelKey, target string) (net.Conn, error) {
	t := d.tunnelPool()
	t.mu.Lock()
	since, older := t.older[key]
	if older && time.Since(since) > olderPeerRetry {
		delete(t.older, key)
		older = false
	}
	t.mu.Unlock()
	if older {
		return nil, errNoTunnels
	}
	for attempt := 0; ; attempt++ {
		cc, err := t.pool.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		octx, cancel := context.WithTimeout(ctx, openTimeout)
		s, err := cc.Connect(octx, target)
		cancel()
		if err == nil {
			return &tunnelConn{Stream: s, local: cc.LocalAddr(), remote: cc.RemoteAddr()}, nil
		}
		// A stream the peer provably did not take (refused, beyond its
		// GOAWAY, or the connection closing) is asked for once more.
		if attempt == 0 && (errors.Is(err, h2.ErrRefused) || errors.Is(err, h2.ErrConnUnusable)) {
			continue
		}
		var reset http2.StreamError
		var refused *h2.ConnectError
		if errors.As(err, &reset) || errors.As(err, &refused) { // reset unanswered, or answered otherwise than 200
			return nil, fmt.Errorf("%w: a tunnel stream to %s: %w", ErrPeerRefused, target, err)
		}
		return nil, fmt.Errorf("mesh: opening a tunnel stream to %s: %w", target, err)
	}
}

// tunnelPool returns the dialer's tunnels, set up on first use.
func (d *Dialer) tunnelPool() *tunnels {
	t := &d.tunnels
	t.once.Do(func() {
		t.older = map[tunnelKey]time.Time{}
		t.pool = h2.NewPool(d.dialTunnel, h2.ClientConfig{StreamWindow: tunnelStreamWindow, ConnWindow: tunnelConnWindow, MaxStreams: tunnelClientStreams,
			IdleTimeout: d.IdleTimeout, PingAfter: 30 * time.Second, PingTimeout: 15 * time.Second})
	})
	return t
}

// dialTunnel opens a tunnel connection to key's proxy.
func (d *Dialer) dialTunnel(ctx context.Context, key tunnelKey) (net.Conn, error) {
	c, err := d.handshake(ctx, key.dir, key.addr, key.peer)
	if err != nil {
		return nil, err
	}
	if c.ConnectionState().NegotiatedProtocol != ALPNTunnels {
		c.Close() // one handshake spent finding out, once per olderPeerRetry
		t := &d.tunnels
		now := time.Now()
		t.mu.Lock()
		for k, since := range t.older { // (peers gone for good are forgotten)
			if now.Sub(since) > olderPeerRetry {
				delete(t.older, k)
			}
		}
		t.older[key] = now
		t.mu.Unlock()
		return nil, errNoTunnels
	}
	if _, err := c.Write(Header{Protocol: Tunnel}.Append(nil)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// CloseIdle closes the tunnel connections that carry no connection.
func (d *Dialer) CloseIdle() { d.tunnelPool().pool.CloseIdle() }

// openTimeout bounds waiting for the peer to take a stream: to answer it
// once its application took the connection.
const openTimeout = HandshakeTimeout

// tunnelConn is the outbound end of a tunnel stream.
type tunnelConn struct {
	*h2.Stream
	local, remote net.Addr
}

func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }
func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }

// errNoWriteDeadline: a stream's writes wait for HTTP/2 flow control,
// bounded by the tunnel connection's write timeout, not per stream.
var errNoWriteDeadline = errors.New("mesh: tunnel streams have no write deadline")

func (c *tunnelConn) SetWriteDeadline(time.Time) error { return errNoWriteDeadline }

func (c *tunnelConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return errNoWriteDeadline
}

// TunnelServer serves Tunnel sessions (after their header) with
// tunnelHandler(allowed, serve), closing one that carried no connection
// for idle; resetFlood, if set, is told of one closed as a rapid-reset
// flood.
func TunnelServer(allowed func(port uint16) bool, serve func(ctx context.Context, port uint16, c net.Conn), idle time.Duration, resetFlood func(net.Addr), log *slog.Logger) *h2.Server {
	return &h2.Server{Handler: tunnelHandler(allowed, serve), MaxConcurrentStreams: tunnelMaxStreams,
		StreamWindow: tunnelStreamWindow, ConnWindow: tunnelConnWindow, IdleTimeout: idle, ResetFlood: resetFlood, Log: log}
}

// tunnelHandler serves a Tunnel session's streams: each CONNECT names the
// application port its connection is for, which allowed must accept, and
// is a connection from the peer, which the limits of the listener that
// accepted the tunnel must admit (transport.Meta.Admit); the stream is
// then handed to serve as a connection, for as long as serve runs. It is
// answered 200 when serve first reads or writes it — once serve has
// connected to the application, as ztunnel answers — so a stream serve
// refuses (the application unreachable, a policy's denial) is reset
// before any answer: the peer learns it as a failed connect, and a peer
// resetting streams faster than they are answered is a rapid-reset flood.
func tunnelHandler(allowed func(port uint16) bool, serve func(ctx context.Context, port uint16, c net.Conn)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "a tunnel carries CONNECT streams only", http.StatusMethodNotAllowed)
			return
		}
		_, p, err := net.SplitHostPort(r.Host)
		port, perr := strconv.ParseUint(p, 10, 16)
		if err != nil || perr != nil || port == 0 {
			http.Error(w, "the CONNECT authority has no valid port", http.StatusBadRequest)
			return
		}
		if !allowed(uint16(port)) {
			http.Error(w, "not an application port", http.StatusForbidden)
			return
		}
		sw, ok := w.(streamWriter)
		if !ok {
			http.Error(w, "tunnel streams need package h2's server", http.StatusInternalServerError)
			return
		}
		local, remote := net.Addr(&net.TCPAddr{}), net.Addr(&net.TCPAddr{})
		if m := transport.MetaFrom(r.Context()); m != nil { // the tunnel connection's
			release, ok := m.Admit()
			if !ok {
				http.Error(w, "over the proxy's connection limits", http.StatusServiceUnavailable)
				return
			}
			defer release()
			local, remote = net.TCPAddrFromAddrPort(m.Local), net.TCPAddrFromAddrPort(m.Client)
		}
		c := &tunnelStream{body: r.Body, w: sw, local: local, remote: remote}
		defer c.Close()
		serve(r.Context(), uint16(port), c)
	})
}

// streamWriter is what package h2's server offers a CONNECT stream's
// handler beyond http.ResponseWriter.
type streamWriter interface {
	http.ResponseWriter
	FlushError() error
	CloseWrite() error
	Reset()
}

// tunnelStream is the inbound end of a tunnel stream.
type tunnelStream struct {
	body          io.ReadCloser // the request's: what the peer sends
	w             streamWriter
	local, remote net.Addr
	once          sync.Once
	answerErr     error
}

// answer answers the CONNECT (200), once, before the stream's first read
// or write.
func (c *tunnelStream) answer() error {
	c.once.Do(func() {
		c.w.WriteHeader(http.StatusOK)
		c.answerErr = c.w.FlushError()
	})
	return c.answerErr
}

func (c *tunnelStream) Read(p []byte) (int, error) {
	if err := c.answer(); err != nil {
		return 0, err
	}
	return c.body.Read(p)
}

// Write sends p at once: a tunnel's bytes are not held back.
func (c *tunnelStream) Write(p []byte) (int, error) {
	if err := c.answer(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err == nil {
		err = c.w.FlushError()
	}
	return n, err
}

// CloseWrite ends this side's bytes (END_STREAM).
func (c *tunnelStream) CloseWrite() error {
	if err := c.answer(); err != nil {
		return err
	}
	return c.w.CloseWrite()
}

// Close resets a stream not ended both ways; it may be called while a
// read or write is under way, which then fails.
func (c *tunnelStream) Close() error {
	c.w.Reset()
	return nil
}

func (c *tunnelStream) LocalAddr() net.Addr  { return c.local }
func (c *tunnelStream) RemoteAddr() net.Addr { return c.remote }

func (c *tunnelStream) SetReadDeadline(t time.Time) error { return setReadDeadline(c.body, t) }

func (c *tunnelStream) SetWriteDeadline(time.Time) error { return errNoWriteDeadline }

func (c *tunnelStream) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return errNoWriteDeadline
}

// setReadDeadline sets the read deadline of a stream's body; a body
// without one (http.NoBody: the peer ended its side at once) has nothing
// to wait for.
func setReadDeadline(body io.Reader, t time.Time) error {
	if b, ok := body.(interface{ SetReadDeadline(time.Time) error }); ok {
		return b.SetReadDeadline(t)
	}
	return nil
}
