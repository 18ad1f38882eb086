package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// A Tunnel session carries opaque connections between two proxies as
// HTTP/2 CONNECT streams of one mTLS connection, as HBONE does between
// ztunnels: opening a connection costs a stream (a HEADERS frame each way)
// instead of a TCP and TLS handshake — the handshake's key exchange was
// three quarters of a new meshed connection's CPU. Bytes are DATA frames
// under HTTP/2's flow control, one direction's end is END_STREAM (TCP's
// FIN), an abort RST_STREAM (TCP's RST).

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

// errNoTunnels is a peer that does not take tunnels.
var errNoTunnels = errors.New("mesh: the peer proxy takes no tunnels")

// A tunnel's flow-control windows. A stream's bounds what one connection
// whose reader lags holds buffered (256 KiB: 256 MB/s per stream at a
// 1 ms round trip); the connection's, far above it, is what it takes for
// lagging streams to stall the others (128 of them) and bounds a
// tunnel's buffers.
const (
	tunnelStreamWindow = 256 << 10
	tunnelConnWindow   = 32 << 20
)

// olderPeerRetry is how long opaque connections to a peer that chose ALPN
// go without tunnels before it is asked again (it may have been upgraded).
const olderPeerRetry = 5 * time.Minute

// tunnel opens a stream to target's port on a tunnel connection to key's
// proxy, or fails with errNoTunnels for a peer that takes none.
func (d *Dialer) tunnel(ctx context.Context, key tunnelKey, target string) (net.Conn, error) {
	t := &d.tunnels
	t.once.Do(func() {
		t.older = map[tunnelKey]time.Time{}
		t.pool = h2.NewPool(d.dialTunnel, h2.ClientConfig{StreamWindow: tunnelStreamWindow, ConnWindow: tunnelConnWindow,
			IdleTimeout: d.IdleTimeout, PingAfter: 30 * time.Second, PingTimeout: 15 * time.Second})
	})
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
	cc, err := t.pool.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return openStream(ctx, cc, target)
}

// dialTunnel opens a tunnel connection to key's proxy.
func (d *Dialer) dialTunnel(ctx context.Context, key tunnelKey) (net.Conn, error) {
	c, err := d.handshake(ctx, key.dir, key.addr, key.peer)
	if err != nil {
		return nil, err
	}
	if c.ConnectionState().NegotiatedProtocol != ALPNTunnels {
		c.Close() // one handshake spent finding out, once per olderPeerRetry
		d.tunnels.mu.Lock()
		d.tunnels.older[key] = time.Now()
		d.tunnels.mu.Unlock()
		return nil, errNoTunnels
	}
	if _, err := c.Write(Header{Protocol: Tunnel}.Append(nil)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// CloseIdle closes the tunnel connections that carry no connection.
func (d *Dialer) CloseIdle() {
	if p := d.tunnels.pool; p != nil {
		p.CloseIdle()
	}
}

// openTimeout bounds waiting for the peer to take a stream.
const openTimeout = HandshakeTimeout

// openStream asks for a stream to target's port on cc (a stream is
// reserved) and waits for the peer to take it. The stream lives until
// the connection it returns is closed; ctx bounds only the wait.
func openStream(ctx context.Context, cc *h2.ClientConn, target string) (net.Conn, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	octx, ocancel := context.WithTimeout(ctx, openTimeout)
	defer ocancel()
	stop := context.AfterFunc(octx, cancel)
	pr, pw := io.Pipe()
	req := (&http.Request{Method: http.MethodConnect, Host: target, URL: &url.URL{Host: target},
		Header: http.Header{}, Body: pr, ContentLength: -1}).WithContext(sctx)
	resp, err := cc.RoundTrip(req)
	if !stop() { // the wait was given up on, or timed out: the stream is reset
		if err == nil {
			resp.Body.Close()
		}
		pw.Close()
		return nil, fmt.Errorf("mesh: opening a tunnel stream to %s: %w", target, context.Cause(octx))
	}
	if err != nil {
		cancel()
		pw.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		pw.Close()
		return nil, fmt.Errorf("mesh: the peer proxy refused a tunnel stream to %s: %s", target, resp.Status)
	}
	return &tunnelConn{body: resp.Body, w: pw, cancel: cancel, local: cc.LocalAddr(), remote: cc.RemoteAddr()}, nil
}

// tunnelConn is the outbound end of a tunnel stream.
type tunnelConn struct {
	body          io.ReadCloser // the response's: what the peer sends
	w             *io.PipeWriter
	cancel        context.CancelFunc
	local, remote net.Addr
}

func (c *tunnelConn) Read(p []byte) (int, error)  { return c.body.Read(p) }
func (c *tunnelConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite ends this side's bytes (END_STREAM).
func (c *tunnelConn) CloseWrite() error { return c.w.Close() }

// Close ends this side's bytes and stops reading the peer's: a stream the
// peer has not ended yet is reset.
func (c *tunnelConn) Close() error {
	c.w.Close()
	c.body.Close()
	c.cancel()
	return nil
}

func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }
func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }

func (c *tunnelConn) SetReadDeadline(t time.Time) error { return setReadDeadline(c.body, t) }

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
// for idle.
func TunnelServer(allowed func(port uint16) bool, serve func(ctx context.Context, port uint16, c net.Conn), idle time.Duration, log *slog.Logger) *h2.Server {
	return &h2.Server{Handler: tunnelHandler(allowed, serve), StreamWindow: tunnelStreamWindow, ConnWindow: tunnelConnWindow,
		IdleTimeout: idle, Log: log}
}

// tunnelHandler serves a Tunnel session's streams: each CONNECT names the
// application port its connection is for, which allowed must accept, and
// is a connection from the peer, which the limits of the listener that
// accepted the tunnel must admit (transport.Meta.Admit); the stream is
// then answered 200 and handed to serve as a connection, for as long as
// serve runs.
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
		w.WriteHeader(http.StatusOK)
		if err := sw.FlushError(); err != nil {
			return
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
}

func (c *tunnelStream) Read(p []byte) (int, error) { return c.body.Read(p) }

// Write sends p at once: a tunnel's bytes are not held back.
func (c *tunnelStream) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err == nil {
		err = c.w.FlushError()
	}
	return n, err
}

// CloseWrite ends this side's bytes (END_STREAM).
func (c *tunnelStream) CloseWrite() error { return c.w.CloseWrite() }

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
