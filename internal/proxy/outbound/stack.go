// Package outbound assembles the proxy's outbound stack: the application's
// own outgoing connections, redirected by iptables, sent to an explicit
// upstream port, or sent to the outbound port as an HTTP forward proxy.
package outbound

import (
	"log/slog"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Stacks builds the outbound stacks; they share everything but the target
// stage, which differs between the main listener and each upstream port.
type Stacks struct {
	detect    transport.Handler
	Forwarder *httpproxy.Forwarder
}

// New builds the outbound stack, read top to bottom:
//
//	accept → target (upstream table, original destination, or per request)
//	       → tcp metrics → detect ─┬─ HTTP: forward-proxy addressing → http metrics → forward
//	                               └─ opaque: TCP forward
func New(cfg *config.Config, reg *metrics.Registry, dialer *transport.Dialer, log *slog.Logger) *Stacks {
	fwd := httpproxy.NewForwarder(httpproxy.ForwardConfig{Direction: transport.Outbound, PoolIdleTimeout: cfg.PoolIdleTimeout}, dialer, log)
	http := httpproxy.Stack(fwd,
		forwardProxy(dialer, log),
		httpproxy.Metrics(reg),
	)
	httpServer := httpproxy.NewServer(http, httpproxy.H1Config{
		MaxHeaderBytes: cfg.MaxHeaderBytes, HeaderReadTimeout: cfg.HeaderReadTimeout, IdleTimeout: cfg.IdleTimeout,
	}, log)
	opaque := &tcpproxy.Forwarder{Dialer: dialer, Log: log}
	detector := detect.Detector{Timeout: cfg.DetectTimeout, ServerFirstDelay: cfg.ServerFirstDelay}
	return &Stacks{
		detect:    transport.Stack(detect.Stage(detector, cfg.OpaquePorts, dialer, log, httpServer, opaque), transport.Meter(reg)),
		Forwarder: fwd,
	}
}

// Main is the stack of the outbound listener: redirected connections go to
// their original destination; direct ones are forward-proxy clients.
func (s *Stacks) Main() transport.Handler {
	return transport.Stack(s.detect, originalDst())
}

// Upstream is the stack of an explicit upstream port: everything goes to u.
func (s *Stacks) Upstream(u config.Upstream) transport.Handler {
	return transport.Stack(s.detect, fixedTarget(u.Target))
}
