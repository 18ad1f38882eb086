package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Server serves HTTP on connections detection classified as HTTP: HTTP/1
// with the server in this package, h2c (prior knowledge) with package h2's.
type Server struct {
	handler http.Handler
	cfg     ServerConfig
	log     *slog.Logger
	h2      *h2.Server
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
	s := &Server{handler: h, cfg: cfg, log: log}
	s.h2 = &h2.Server{
		Handler:              h,
		MaxConcurrentStreams: 1000,
		MaxHeaderBytes:       cfg.MaxHeaderBytes, // as HTTP/1's
		// A connection's window well above a stream's: one slowly read
		// upload on a shared (mesh) connection does not stall the others.
		StreamWindow: 1 << 20,
		ConnWindow:   4<<20 - 1,
		IdleTimeout:  cfg.IdleTimeout,
		Log:          log,
	}
	if cfg.ResetFloods != nil {
		s.h2.ResetFlood = func(net.Addr) { cfg.ResetFloods() }
	}
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
	s.h2.ServeConn(ctx, c, m.Drain)
}
