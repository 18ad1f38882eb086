package outbound

import (
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// forwardProxy serves clients that use the outbound port as their
// HTTP_PROXY: absolute-form requests go to the host they name, and a
// CONNECT tunnel is served by tunnel as a connection to its target.
// Connections that already have a target pass through.
func forwardProxy(tunnel transport.Handler, peers *peers, log *slog.Logger) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if httpproxy.Target(r.Context()) != "" {
				next.ServeHTTP(w, r)
				return
			}
			m := transport.MetaFrom(r.Context())
			if r.Method == http.MethodConnect {
				connect(w, r, m, tunnel, peers)
				return
			}
			if !r.URL.IsAbs() || r.URL.Host == "" {
				httpproxy.WriteError(w, r, http.StatusBadRequest, "not a proxy request: use an absolute URI or CONNECT")
				return
			}
			if r.URL.Scheme != "http" {
				httpproxy.WriteError(w, r, http.StatusBadRequest, "unsupported scheme "+r.URL.Scheme+": use CONNECT for https")
				return
			}
			target := withDefaultPort(r.URL.Host, "80")
			if isSelf(target, m) {
				httpproxy.WriteError(w, r, http.StatusLoopDetected, "request addressed to the proxy itself")
				return
			}
			next.ServeHTTP(w, r.WithContext(httpproxy.WithTarget(r.Context(), target, peers.Lookup(target), "")))
		})
	}
}

// connect answers CONNECT host:port with 200 and hands the client's
// connection to tunnel as one intercepted on its way to host:port would
// be: what it carries is detected, HTTP goes through the routes, balancing
// and mTLS of a request to that target, anything else as opaque traffic to
// it — a meshed service's endpoint over mTLS, elsewhere only where egress
// policy allows (the tunnel is closed otherwise).
func connect(w http.ResponseWriter, r *http.Request, m *transport.Meta, tunnel transport.Handler, peers *peers) {
	if r.ProtoMajor != 1 {
		httpproxy.WriteError(w, r, http.StatusNotImplemented, "CONNECT is supported over HTTP/1.1 only")
		return
	}
	target := withDefaultPort(r.Host, "443")
	if isSelf(target, m) {
		httpproxy.WriteError(w, r, http.StatusLoopDetected, "CONNECT to the proxy itself")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpproxy.WriteError(w, r, http.StatusInternalServerError, "cannot take over the connection")
		return
	}
	brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	tm := &transport.Meta{Direction: transport.Outbound, Client: m.Client, Local: m.Local, Target: target,
		PeerIdentity: peers.Lookup(target), TLS: m.TLS, NoTLSReason: m.NoTLSReason, Drain: m.Drain}
	tunnel.ServeConn(transport.WithMeta(r.Context(), tm), detect.NewConn(conn, append([]byte(nil), buffered...)))
}

func withDefaultPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	// A bracketed IPv6 literal without a port: JoinHostPort adds brackets.
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), port)
}

// isSelf reports whether target is the listener the client connected to.
func isSelf(target string, m *transport.Meta) bool {
	return target == m.Local.String()
}
