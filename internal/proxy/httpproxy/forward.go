package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// ForwardConfig tunes the upstream connection pools.
type ForwardConfig struct {
	Direction       transport.Direction
	PoolIdleTimeout time.Duration
}

// Forwarder is the innermost HTTP stage: it sends each request to its target
// over a pooled connection of the request's own protocol and streams the
// response back. Hop-by-hop fields are removed; everything else — status,
// repeated fields, bodies, trailers, 1xx responses, upgrades — passes
// through unchanged.
//
// HTTP/1 requests take a path written for the purpose (h1forward.go): the
// exchange runs in the handler's goroutine on a connection from h1Pool,
// which halved the proxy's CPU per request compared with
// httputil.ReverseProxy over http.Transport (docs/benchmarks.md). HTTP/2
// requests go through ReverseProxy over an h2c http.Transport.
type Forwarder struct {
	pool  *h1Pool
	proxy *httputil.ReverseProxy
	h2    *http.Transport
	log   *slog.Logger
}

// NewForwarder returns a forwarder dialing with d.
func NewForwarder(cfg ForwardConfig, d *transport.Dialer, log *slog.Logger) *Forwarder {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, cfg.Direction, addr)
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	f := &Forwarder{log: log, pool: newH1Pool(dial, cfg.PoolIdleTimeout)}
	f.h2 = &http.Transport{
		Proxy:              nil, // never honour HTTP_PROXY: the proxy is the proxy
		DialContext:        func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
		Protocols:          &h2c,
		DisableCompression: true, // pass content encodings through untouched
		IdleConnTimeout:    cfg.PoolIdleTimeout,
		HTTP2:              &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    f.h2,
		BufferPool:   bufferPool{},
		ErrorHandler: f.fail,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return f
}

// rewrite points the outgoing request at its target and keeps everything
// the client sent that ReverseProxy would otherwise normalise: the query
// string byte for byte and the forwarding headers (a transparent proxy
// neither adds nor removes X-Forwarded-*).
func rewrite(pr *httputil.ProxyRequest) {
	out, in := pr.Out, pr.In
	out.URL.Scheme = "http"
	out.URL.Host = Target(in.Context())
	out.URL.RawQuery = in.URL.RawQuery
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := in.Header[h]; ok {
			out.Header[h] = v
		}
	}
	if _, ok := in.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // don't let net/http add its own
	}
}

func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if Target(r.Context()) == "" {
		WriteError(w, r, http.StatusBadGateway, "no target for request")
		return
	}
	if r.ProtoMajor == 1 {
		f.forwardH1(w, r, Target(r.Context()))
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// fail answers a request whose upstream could not be reached or broke before
// responding, and logs the failure once.
func (f *Forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	status, reason := UpstreamError(err)
	m := transport.MetaFrom(r.Context())
	f.log.Warn("forwarding request failed", "direction", m.Direction, "client", m.Client.String(),
		"target", Target(r.Context()), "authority", r.Host, "status", status, "reason", reason, "error", err)
	WriteError(w, r, status, reason)
}

// CloseIdle closes idle pooled connections (used when draining).
func (f *Forwarder) CloseIdle() {
	f.pool.closeIdle(true)
	f.h2.CloseIdleConnections()
}

// bufferPool recycles the 32 KiB copy buffers of response bodies.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
