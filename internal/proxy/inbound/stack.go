// Package inbound assembles the proxy's inbound stack: connections arriving
// for the local application, redirected by iptables or addressed to the
// inbound port directly.
package inbound

import (
	"log/slog"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Stack is the inbound stack, read top to bottom:
//
//	accept → target (original destination, or the app address) → tcp metrics
//	       → detect ─┬─ HTTP: http metrics → forward to the application
//	                 └─ opaque: TCP forward to the application
func Stack(cfg *config.Config, reg *metrics.Registry, dialer *transport.Dialer, log *slog.Logger) (transport.Handler, *httpproxy.Forwarder) {
	fwd := httpproxy.NewForwarder(httpproxy.ForwardConfig{Direction: transport.Inbound, PoolIdleTimeout: cfg.PoolIdleTimeout}, dialer, log)
	http := httpproxy.Stack(fwd,
		httpproxy.Metrics(reg),
	)
	httpServer := httpproxy.NewServer(http, httpproxy.H1Config{
		MaxHeaderBytes: cfg.MaxHeaderBytes, HeaderReadTimeout: cfg.HeaderReadTimeout, IdleTimeout: cfg.IdleTimeout,
	}, log)
	opaque := &tcpproxy.Forwarder{Dialer: dialer, Log: log}
	detector := detect.Detector{Timeout: cfg.DetectTimeout, ServerFirstDelay: cfg.ServerFirstDelay}
	return transport.Stack(
		detect.Stage(detector, cfg.OpaquePorts, dialer, log, httpServer, opaque),
		target(cfg.AppAddr),
		transport.Meter(reg),
	), fwd
}
