package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// ForwardConfig tunes the upstream connection pools.
type ForwardConfig struct {
	Direction       transport.Direction
	PoolIdleTimeout time.Duration
	// MeshDial, when set, opens a mesh session of protocol proto to the
	// proxy in front of target, which must prove it is peer. Requests whose
	// target is meshed (Peer) use it.
	MeshDial func(ctx context.Context, target, peer string, proto mesh.Protocol) (net.Conn, error)
	// DeclaredProtocol, if set, gives the declared protocol of an
	// unmeshed target's port (ProtocolHTTP1, ProtocolHTTP2, ProtocolGRPC or
	// ""): an inbound proxy's application ports.
	DeclaredProtocol func(port int) string
}

// OrigProtoHeader carries an HTTP/1 request's version across a mesh
// connection, which is always HTTP/2, so the receiving proxy can restore it.
const OrigProtoHeader = "L5d-Orig-Proto"

// Forwarder is the innermost HTTP stage: it sends each request to its target
// over a pooled connection of the request's own protocol and streams the
// response back. Hop-by-hop fields are removed; everything else — status,
// repeated fields, bodies, trailers, 1xx responses, upgrades — passes
// through unchanged.
//
// HTTP/1 requests take a path written for the purpose (h1forward.go): the
// exchange runs in the handler's goroutine on a connection from h1Pool,
// avoiding http.Transport's per-connection goroutines and hand-offs.
// HTTP/2 requests take h2forward.go's path over pooled h2c connections
// (package h2's client). To an
// unmeshed target a request travels in the version the target speaks
// (appproto.go), translated when it is not the client's.
//
// Requests to a meshed target (one with a Peer) all travel as HTTP/2 over
// one multiplexed mTLS connection per target — HTTP/1 ones marked with
// OrigProtoHeader — except protocol upgrades, which need an HTTP/1
// connection of their own.
type Forwarder struct {
	apps   *appProtocols
	pool   *h1Pool
	h2     *h2Pool
	meshH2 *h2Pool // nil without MeshDial
	meshH1 *h1Pool
	log    *slog.Logger
}

// NewForwarder returns a forwarder dialing with d.
func NewForwarder(cfg ForwardConfig, d *transport.Dialer, log *slog.Logger) *Forwarder {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, cfg.Direction, addr)
	}
	f := &Forwarder{log: log, pool: newH1Pool(dial, cfg.PoolIdleTimeout), apps: newAppProtocols(cfg.DeclaredProtocol, dial)}
	h2cfg := h2.ClientConfig{IdleTimeout: cfg.PoolIdleTimeout, PingAfter: 30 * time.Second, PingTimeout: 15 * time.Second}
	f.h2 = newH2Pool(dial, h2cfg)
	if cfg.MeshDial != nil {
		meshDial := func(proto mesh.Protocol) func(ctx context.Context, addr string) (net.Conn, error) {
			return func(ctx context.Context, addr string) (net.Conn, error) {
				return cfg.MeshDial(ctx, addr, Peer(ctx), proto)
			}
		}
		// TLS is the mesh dialer's; HTTP/2 runs inside it.
		f.meshH2 = newH2Pool(meshDial(mesh.HTTP2), h2cfg)
		f.meshH1 = newH1Pool(meshDial(mesh.HTTP1), cfg.PoolIdleTimeout)
	}
	return f
}

func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if Target(r.Context()) == "" {
		WriteError(w, r, http.StatusBadGateway, "no target for request")
		return
	}
	meshed := Peer(r.Context()) != ""
	if meshed && f.meshH2 == nil {
		WriteError(w, r, http.StatusBadGateway, "target is meshed but this proxy has no identity")
		return
	}
	switch {
	case !meshed && !f.apps.h2(r, Target(r.Context())):
		f.forwardH1(w, r, Target(r.Context()), f.pool)
	case r.ProtoMajor == 1 && (upgradeRequested(r) != "" || r.Method == http.MethodConnect):
		f.forwardH1(w, r, Target(r.Context()), f.meshH1)
	case meshed:
		f.forwardH2(w, r, Target(r.Context()), f.meshH2)
	default:
		f.forwardH2(w, r, Target(r.Context()), f.h2)
	}
}

// fail answers a request whose upstream could not be reached or broke before
// responding, and logs the failure once.
func (f *Forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	status, reason := UpstreamError(err)
	m := transport.MetaFrom(r.Context())
	attrs := []any{"direction", m.Direction, "client", m.Client.String(), "target", Target(r.Context()), "authority", r.Host,
		"status", status, "reason", reason, "error", err}
	if route, kind := Route(r.Context()); route != "" {
		attrs = append(attrs, "route", route, "route_kind", kind)
	}
	switch {
	case status < 500:
		f.log.Debug("the client's request could not be forwarded", attrs...) // its own doing
	case reason == reasonUpstreamCancel:
		f.log.Debug("the upstream cancelled the request", attrs...) // a gRPC server whose call's deadline passed, or was cancelled
	default:
		f.log.Warn("forwarding request failed", attrs...)
	}
	if mayRepeat(r, err) {
		w.Header().Set(UnprocessedHeader, "1")
	}
	WriteError(w, r, status, reason)
}

// CloseIdle closes idle pooled connections (used when draining).
func (f *Forwarder) CloseIdle() {
	f.pool.closeIdle(true)
	f.h2.CloseIdle()
	if f.meshH2 != nil {
		f.meshH1.closeIdle(true)
		f.meshH2.CloseIdle()
	}
}

// buffers recycles the 32 KiB copy buffers of bodies.
var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
