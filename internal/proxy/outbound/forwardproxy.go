package outbound

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// dialFunc opens a connection to m.Target as opaque traffic does: to an
// endpoint of its service over mTLS when it is meshed, else where the
// egress policy lets it out.
type dialFunc func(ctx context.Context, m *transport.Meta) (net.Conn, error)

// forwardProxy serves clients that use the outbound port as their
// HTTP_PROXY: absolute-form requests go to the host they name, and CONNECT
// opens a TCP tunnel through dial. Connections that already have a target
// pass through.
func forwardProxy(dial dialFunc, peers *peers, log *slog.Logger) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if httpproxy.Target(r.Context()) != "" {
				next.ServeHTTP(w, r)
				return
			}
			m := transport.MetaFrom(r.Context())
			if r.Method == http.MethodConnect {
				connect(w, r, m, dial, peers, log)
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

// connect answers CONNECT host:port by opening a connection to it as
// opaque traffic to that target would go (a meshed service's endpoint over
// mTLS; anything else only where egress policy allows: 403 otherwise),
// replying 200 and piping bytes both ways.
func connect(w http.ResponseWriter, r *http.Request, m *transport.Meta, dial dialFunc, peers *peers, log *slog.Logger) {
	if r.ProtoMajor != 1 {
		httpproxy.WriteError(w, r, http.StatusNotImplemented, "CONNECT is supported over HTTP/1.1 only")
		return
	}
	target := withDefaultPort(r.Host, "443")
	if isSelf(target, m) {
		httpproxy.WriteError(w, r, http.StatusLoopDetected, "CONNECT to the proxy itself")
		return
	}
	tm := *m
	tm.Target, tm.PeerIdentity, tm.Protocol, tm.Early = target, peers.Lookup(target), "opaque", nil
	up, err := dial(r.Context(), &tm)
	if errors.Is(err, tcpproxy.ErrDenied) {
		httpproxy.WriteError(w, r, http.StatusForbidden, "CONNECT to "+target+" "+err.Error())
		return
	}
	if err != nil {
		status, reason := httpproxy.UpstreamError(err)
		log.Warn("CONNECT failed", "client", m.Client.String(), "target", target, "status", status, "error", err)
		httpproxy.WriteError(w, r, status, reason)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		httpproxy.WriteError(w, r, http.StatusInternalServerError, "cannot take over the connection")
		return
	}
	brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		up.Close()
		return
	}
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	tcpproxy.Pipe(detect.NewConn(conn, append([]byte(nil), buffered...)), up)
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
