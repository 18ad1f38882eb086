// Package outbound assembles the proxy's outbound stack: the application's
// own outgoing connections, redirected by iptables, sent to an explicit
// upstream port, or sent to the outbound port as an HTTP forward proxy.
package outbound

import (
	"context"
	"log/slog"
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/egress"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/observe"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Stacks builds the outbound stacks; they share everything but the target
// stage, which differs between the main listener and each upstream port.
type Stacks struct {
	detect    transport.Handler
	peers     *peers
	up        *upstream
	Forwarder *httpproxy.Forwarder
}

// CloseIdle closes idle pooled connections (used when draining).
func (s *Stacks) CloseIdle() {
	s.Forwarder.CloseIdle()
	if s.up.mesh != nil {
		s.up.mesh.CloseIdle()
	}
}

// New builds the outbound stack, read top to bottom:
//
//	accept → target (upstream table, original destination, or per request)
//	       → detect ─┬─ HTTP: tcp metrics → HTTP server → trace span (the whole hop) → access log
//	                 │        → forward-proxy addressing
//	                 │        → route (the service's HTTPRoutes/GRPCRoutes: rule, backend, timeouts, retries)
//	                 │        → balance (discovered services: one endpoint per request)
//	                 │        → span: route and endpoint
//	                 │        → http metrics → tap → forward (meshed targets: HTTP/2 over mTLS)
//	                 └─ TLS, opaque: tcp metrics → TCP forward, whose connect (upstream.connect)
//	                          balances (one endpoint per connection) and dials (meshed targets: a
//	                          stream of a pooled mTLS tunnel connection to the peer proxy)
//
// creds is nil when the proxy has no identity; then no target is meshed.
// res is nil without a control plane; then targets are used as addressed.
// decisions receives what the route and balance stages decided per request.
// Observability stages obs leaves nil are not in the stack; reg holds the
// transport metrics.
func New(cfg *config.Config, reg *metrics.Registry, dialer *transport.Dialer, creds mesh.Credentials, res *discover.Resolver, guard *egress.Guard, decisions *explain.Log, obs observe.Stages, log *slog.Logger) *Stacks {
	s := &Stacks{peers: newPeers(cfg)}
	fc := httpproxy.ForwardConfig{Direction: transport.Outbound, PoolIdleTimeout: cfg.PoolIdleTimeout}
	bal := &balancer{egress: guard, classes: cfg.Balance.FailureClasses(), failFast: cfg.FailFast, maxPending: DefaultMaxPending}
	var svcs services // a nil *discover.Resolver must stay a nil interface
	if res != nil {
		bal.res, svcs = res, res
	}
	up := &upstream{tcp: dialer, res: res, bal: bal}
	s.up = up
	if creds != nil {
		up.mesh = &mesh.Dialer{TCP: dialer, Creds: creds, Port: cfg.MeshPort, IdleTimeout: cfg.PoolIdleTimeout}
		if res != nil {
			up.mesh.PortOf = res.MeshPort
		}
		fc.MeshDial = up.meshDial
	}
	s.Forwarder = httpproxy.NewForwarder(fc, dialer, log)
	http := httpproxy.Stack(s.Forwarder,
		obs.Tracer.Layer(transport.Outbound), // sends the request on as the span's child
		obs.AccessLog.Layer,
		// A CONNECT tunnel is served as a connection to its target from
		// detection on (s.detect is set below, before any connection).
		forwardProxy(transport.HandlerFunc(func(ctx context.Context, c net.Conn) { s.detect.ServeConn(ctx, c) }), s.peers, log),
		routeAndBalance(svcs, bal, obs.HTTPMetrics, decisions),
		obs.Tracer.Annotate(),
		httpproxy.Metrics(obs.HTTPMetrics),
		tap.Layer(obs.Tap, "outbound"), // per attempt, as its endpoint saw it
	)
	httpServer := transport.Stack(httpproxy.NewServer(http, httpproxy.ServerConfig{
		MaxHeaderBytes: cfg.MaxHeaderBytes, HeaderReadTimeout: cfg.HeaderReadTimeout, IdleTimeout: cfg.IdleTimeout,
		ResetFloods: httpproxy.CountResetFloods(reg, transport.Outbound),
	}, log), transport.Meter(reg))
	opaque := transport.Stack(&tcpproxy.Forwarder{Connect: up.connect, Log: log}, transport.Meter(reg))
	detector := detect.Detector{Timeout: cfg.DetectTimeout, ServerFirstDelay: cfg.ServerFirstDelay, MaxWait: cfg.IdleTimeout}
	s.detect = detect.Stage(detector, skipOpaque(cfg.OpaquePorts, res), up.connect, log, detect.Routes{HTTP: httpServer, TLS: opaque, Opaque: opaque})
	return s
}

// Main is the stack of the outbound listener: redirected connections go to
// their original destination; direct ones are forward-proxy clients.
func (s *Stacks) Main() transport.Handler {
	return transport.Stack(s.detect, originalDst(s.peers))
}

// Upstream is the stack of an explicit upstream port: everything goes to u.
func (s *Stacks) Upstream(u config.Upstream) transport.Handler {
	return transport.Stack(s.detect, fixedTarget(u.Target, u.Identity))
}

// skipOpaque skips protocol detection for connections to --opaque-ports
// and to ports their service declares opaque or tcp (from discovery): a
// server-first protocol there is not kept waiting for the client's first
// bytes, nor anything parsed as HTTP.
func skipOpaque(ports map[uint16]bool, res *discover.Resolver) func(*transport.Meta) detect.OpaquePolicy {
	local := detect.SkipOpaquePorts(ports)
	return func(m *transport.Meta) detect.OpaquePolicy {
		if p := local(m); p != detect.NotOpaque || res == nil || m.Target == "" {
			return p
		}
		if res.Opaque(m.Target) {
			return detect.SkipDetection
		}
		return detect.NotOpaque
	}
}
