package httpproxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// ForwardConfig tunes the upstream connection pools.
type ForwardConfig struct {
	Direction       transport.Direction
	PoolIdleTimeout time.Duration
}

// Forwarder is the innermost HTTP stage: it sends each request to its target
// over a pooled connection of the request's own protocol (HTTP/1.1 or h2c)
// and streams the response back. Hop-by-hop fields are removed, everything
// else — status, repeated fields, bodies, trailers, 1xx responses, upgrades —
// passes through unchanged.
type Forwarder struct {
	proxy *httputil.ReverseProxy
	h1    *http.Transport
	h2    *http2.Transport
	log   *slog.Logger
}

// NewForwarder returns a forwarder dialing with d.
func NewForwarder(cfg ForwardConfig, d *transport.Dialer, log *slog.Logger) *Forwarder {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		return d.DialContext(ctx, cfg.Direction, addr)
	}
	f := &Forwarder{log: log}
	f.h1 = &http.Transport{
		Proxy:                  nil, // never honour HTTP_PROXY: the proxy is the proxy
		DialContext:            dial,
		DisableCompression:     true, // pass content encodings through untouched
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        cfg.PoolIdleTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		ForceAttemptHTTP2:      false,
	}
	f.h2 = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
		DisableCompression: true,
		ReadIdleTimeout:    30 * time.Second,
		PingTimeout:        15 * time.Second,
		IdleConnTimeout:    cfg.PoolIdleTimeout,
	}
	f.proxy = &httputil.ReverseProxy{
		Director:     direct,
		Transport:    roundTripper{f},
		BufferPool:   bufferPool{},
		ErrorHandler: f.fail,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return f
}

// direct points the outgoing request at its target, keeping the client's
// Host, path and query exactly as they were.
func direct(r *http.Request) {
	r.URL.Scheme = "http"
	r.URL.Host = Target(r.Context())
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = []string{""} // don't let net/http add its own
	}
}

func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if Target(r.Context()) == "" {
		WriteError(w, r, http.StatusBadGateway, "no target for request")
		return
	}
	// The client's address is in the connection metadata; an empty
	// RemoteAddr stops ReverseProxy from appending it to X-Forwarded-For,
	// which a transparent proxy must leave as the client sent it.
	r.RemoteAddr = ""
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
	f.h1.CloseIdleConnections()
	f.h2.CloseIdleConnections()
}

// roundTripper sends HTTP/2 requests over h2c and the rest over HTTP/1.1.
type roundTripper struct{ f *Forwarder }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ProtoMajor == 2 {
		return rt.f.h2.RoundTrip(r)
	}
	return rt.f.h1.RoundTrip(r)
}

// bufferPool recycles the 32 KiB copy buffers of response bodies.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
