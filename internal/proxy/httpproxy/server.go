package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Server serves HTTP on connections detection classified as HTTP: HTTP/1
// with the server in this package, h2c (prior knowledge) with net/http's
// HTTP/2 server.
type Server struct {
	handler http.Handler
	cfg     ServerConfig
	log     *slog.Logger
	h2      *http.Server
	h2ln    *connListener
	drain   func()
}

// ServerConfig bounds what one client may cost.
type ServerConfig struct {
	MaxHeaderBytes    int
	HeaderReadTimeout time.Duration // HTTP/1: the request head
	IdleTimeout       time.Duration
	// ResetFloods, if set, is called for each HTTP/2 connection closed as a
	// rapid-reset flood.
	ResetFloods func()
}

// CountResetFloods registers the count of dir's HTTP/2 connections closed
// as rapid-reset floods and returns the ServerConfig.ResetFloods that counts.
func CountResetFloods(reg *metrics.Registry, dir transport.Direction) func() {
	var n atomic.Uint64
	reg.Counter(string(dir)+"_http2_reset_floods_total",
		"HTTP/2 connections the "+string(dir)+" proxy closed with GOAWAY ENHANCE_YOUR_CALM because the client reset most streams before their response (rapid reset).",
		func() float64 { return float64(n.Load()) })
	return func() { n.Add(1) }
}

// NewServer returns a server handing every request to h.
func NewServer(h http.Handler, cfg ServerConfig, log *slog.Logger) *Server {
	s := &Server{handler: h, cfg: cfg, log: log, h2ln: newConnListener()}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	s.h2 = &http.Server{
		Handler:        h,
		Protocols:      &protos,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes, // as HTTP/1's
		// A connection's window well above a stream's: one slowly read
		// upload on a shared (mesh) connection does not stall the others.
		// Frames up to the protocol's initial 16 KiB, as nginx, Envoy and
		// linkerd2-proxy advertise (net/http's 1 MiB let single-stream
		// uploads run ~20 % faster in BenchmarkH2UploadOneHop, and h2spec
		// 4.2 #3 fail).
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000, MaxReceiveBufferPerStream: 1 << 20,
			MaxReceiveBufferPerConnection: 4<<20 - 1, MaxReadFrameSize: maxReadFrameSize},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// The connection's context, still marked as this server's: net/http
		// logs what it finds wrong with a response (a superfluous
		// WriteHeader, ...) to the ErrorLog of the server the request's
		// context names, else to the process's standard logger.
		ConnContext: func(_ context.Context, c net.Conn) context.Context {
			return context.WithValue(c.(*trackedConn).ctx, http.ServerContextKey, s.h2)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				c.(*trackedConn).finish()
			}
		},
	}
	go s.h2.Serve(s.h2ln)
	// Shutting the h2c server down sends GOAWAY on every connection and
	// lets in-flight streams finish.
	s.drain = sync.OnceFunc(func() { go s.h2.Shutdown(context.Background()) })
	return s
}

// ServeConn serves c until the client closes it, it idles out, or the proxy
// drains.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	m := transport.MetaFrom(ctx)
	if m.Early != nil {
		m.Early.Close() // HTTP servers never speak first: the probe is not needed
	}
	if m.Protocol != "h2" {
		serveH1(ctx, s.cfg, s.log, s.handler, c)
		return
	}
	stop := context.AfterFunc(m.Drain, s.drain)
	defer stop()
	flood := func() {
		s.log.Warn("HTTP/2 connection closed with GOAWAY ENHANCE_YOUR_CALM: the client reset most streams before their response (rapid reset)",
			"client", c.RemoteAddr().String())
		if s.cfg.ResetFloods != nil {
			s.cfg.ResetFloods()
		}
	}
	tc := &trackedConn{Conn: newResetGuard(c, flood), ctx: ctx, done: make(chan struct{})}
	if !s.h2ln.hand(tc) {
		c.Close()
		return
	}
	<-tc.done
}

// trackedConn carries a connection's context into net/http and reports
// when net/http is done with it.
type trackedConn struct {
	net.Conn
	ctx  context.Context
	once sync.Once
	done chan struct{}
}

func (c *trackedConn) finish() { c.once.Do(func() { close(c.done) }) }

// connListener is a net.Listener fed with connections that were accepted
// and classified elsewhere.
type connListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// hand gives c to the server; false if the listener is closed.
func (l *connListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }
