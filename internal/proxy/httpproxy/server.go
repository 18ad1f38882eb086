package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Server serves HTTP on connections detection classified as HTTP: HTTP/1 with
// the server in this package, h2c with golang.org/x/net/http2.
type Server struct {
	handler  http.Handler
	h1       H1Config
	log      *slog.Logger
	h2       *http2.Server
	base     *http.Server
	shutdown func()
}

// NewServer returns a server handing every request to h.
func NewServer(h http.Handler, cfg H1Config, log *slog.Logger) *Server {
	s := &Server{handler: h, h1: cfg, log: log}
	s.h2 = &http2.Server{IdleTimeout: cfg.IdleTimeout, MaxConcurrentStreams: 1000}
	s.base = &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	http2.ConfigureServer(s.base, s.h2)
	// Shutting the base server down sends GOAWAY on every h2c connection.
	s.shutdown = sync.OnceFunc(func() { go s.base.Shutdown(context.Background()) })
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
		serveH1(ctx, s.h1, s.log, s.handler, c)
		return
	}
	stop := context.AfterFunc(m.Drain, s.shutdown)
	defer stop()
	s.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.base, Handler: s.handler})
}
