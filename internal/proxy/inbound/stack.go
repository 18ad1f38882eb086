// Package inbound assembles the proxy's inbound stack: connections arriving
// for the local application — redirected by iptables, addressed to the
// inbound port directly, or sent by a peer proxy over mutual TLS.
package inbound

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/proxy/authz"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/observe"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Stack is the inbound stack, read top to bottom:
//
//	accept → target (original destination, or the app address)
//	       → detect ─┬─ HTTP ───────────────────────────────┐
//	                 ├─ TLS: mesh ALPN? terminate mTLS, read │
//	                 │   the header (app port, protocol) ────┤
//	                 │   tunnel: per stream ───────┐         │
//	                 │   else opaque ──────────────┤         │
//	                 └─ opaque ────────────────────┤         │
//	       tcp metrics → authz → TCP forward ◄─┘         │
//	   tcp metrics → HTTP server → trace → http metrics     ◄┘
//	               → authz (403 / PERMISSION_DENIED) → client id
//	               → original protocol → tap → access log
//	               → forward to the application
//
// creds is nil when the proxy has no identity: peers cannot reach it over
// mTLS, and plaintext is all there is. Observability stages obs leaves
// nil are not in the stack; reg holds the transport metrics; authorizer
// decides who may reach the application.
func Stack(cfg *config.Config, reg *metrics.Registry, dialer *transport.Dialer, creds mesh.Credentials, obs observe.Stages, authorizer *authz.Authorizer, log *slog.Logger) (transport.Handler, *httpproxy.Forwarder) {
	fwd := httpproxy.NewForwarder(httpproxy.ForwardConfig{Direction: transport.Inbound, PoolIdleTimeout: cfg.PoolIdleTimeout,
		DeclaredProtocol: declaredProtocols(cfg.ServicePorts)}, dialer, log)
	http := httpproxy.Stack(fwd,
		obs.Tracer.Layer(transport.Inbound),
		httpproxy.Metrics(obs.HTTPMetrics),
		authorizer.HTTP,
		clientID,
		origProto,
		tap.Layer(obs.Tap, "inbound"),
		obs.AccessLog.Layer, // after origProto: the line shows the protocol the client used
	)
	floods := httpproxy.CountResetFloods(reg, transport.Inbound)
	httpServer := transport.Stack(httpproxy.NewServer(http, httpproxy.ServerConfig{
		MaxHeaderBytes: cfg.MaxHeaderBytes, HeaderReadTimeout: cfg.HeaderReadTimeout, IdleTimeout: cfg.IdleTimeout,
		ResetFloods: floods,
	}, log), transport.Meter(reg))
	connect := func(ctx context.Context, m *transport.Meta) (net.Conn, error) {
		return dialer.DialContext(ctx, m.Direction, m.Target)
	}
	opaque := transport.Stack(&tcpproxy.Forwarder{Connect: connect, Log: log}, transport.Meter(reg), authorizer.TCP)
	detector := detect.Detector{Timeout: cfg.DetectTimeout, ServerFirstDelay: cfg.ServerFirstDelay, MaxWait: cfg.IdleTimeout}
	return transport.Stack(
		detect.Stage(detector, inboundOpaque(opaquePorts(cfg), authorizer.Opaque), connect, log, detect.Routes{
			HTTP:   httpServer,
			TLS:    terminateMesh(creds, appHost(cfg.AppAddr), meshPorts(cfg), cfg.IdleTimeout, floods, log, httpServer, opaque),
			Opaque: opaque,
		}),
		target(cfg.AppAddr, creds != nil),
	), fwd
}

// opaquePorts is --opaque-ports and the application ports whose service
// ports are declared opaque or tcp: no protocol is detected on them.
func opaquePorts(cfg *config.Config) map[uint16]bool {
	ports := maps.Clone(cfg.OpaquePorts)
	if ports == nil {
		ports = map[uint16]bool{}
	}
	for _, sp := range cfg.ServicePorts {
		if sp.Protocol == "opaque" || sp.Protocol == "tcp" {
			ports[sp.TargetPort] = true
		}
	}
	return ports
}

// inboundOpaque skips detection for connections redirected to an opaque
// application port: one of ports, or one its Server declares opaque
// (declared). Connections addressed to the inbound port itself may be peer
// proxies' mTLS (which carries opaque ports too): for an opaque app port
// they are opaque from their first byte unless it starts TLS.
func inboundOpaque(ports map[uint16]bool, declared func(port uint16) bool) func(*transport.Meta) detect.OpaquePolicy {
	opaque := func(port uint16) bool { return ports[port] || declared(port) }
	return func(m *transport.Meta) detect.OpaquePolicy {
		switch {
		case m.Redirected && opaque(m.OrigDst.Port()):
			return detect.SkipDetection
		case !m.Redirected && opaque(m.TargetPort()):
			return detect.OpaqueUnlessTLS
		}
		return detect.NotOpaque
	}
}

// meshPorts is the ports peers' mesh connections may be for. With an
// application address (the application on loopback, say) that is its port
// and the service's target ports, nothing else on the host; otherwise any
// port but the proxy's own listeners'.
func meshPorts(cfg *config.Config) func(uint16) bool {
	port := func(addr string) uint16 {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.ParseUint(p, 10, 16)
		return uint16(n)
	}
	if cfg.AppAddr != "" {
		app := map[uint16]bool{port(cfg.AppAddr): true}
		for _, sp := range cfg.ServicePorts {
			app[sp.TargetPort] = true
		}
		return func(p uint16) bool { return app[p] }
	}
	own := map[uint16]bool{}
	for _, a := range []string{cfg.InboundAddr, cfg.OutboundAddr, cfg.AdminAddr, cfg.TapAddr} {
		if p := port(a); p != 0 {
			own[p] = true
		}
	}
	for _, u := range cfg.Upstreams {
		own[u.LocalPort] = true
	}
	return func(p uint16) bool { return p != 0 && !own[p] }
}

// appHost is where the application listens for connections that arrive
// without an original destination to go by: the app address's host, or
// the address the connection came in on.
func appHost(appAddr string) func(m *transport.Meta) string {
	host, _, _ := net.SplitHostPort(appAddr)
	return func(m *transport.Meta) string {
		if host != "" {
			return host
		}
		return m.Local.Addr().Unmap().String()
	}
}

// declaredProtocols maps the application's ports to the protocols their
// service ports declare; nil when none declares one, so requests need not
// look.
func declaredProtocols(ports []config.ServicePort) func(port int) string {
	byPort := map[int]string{}
	for _, sp := range ports {
		if sp.Protocol != "" {
			byPort[int(sp.TargetPort)] = sp.Protocol
		}
	}
	if len(byPort) == 0 {
		return nil
	}
	return func(port int) string { return byPort[port] }
}
