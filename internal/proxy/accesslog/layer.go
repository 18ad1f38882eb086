package accesslog

import (
	"net/http"
	"net/netip"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// entry is what one line says about a request.
type entry struct {
	start         time.Time
	duration      time.Duration
	direction     string
	client        netip.AddrPort
	clientID      string
	host          string
	method        string
	uri           string
	version       string
	userAgent     string
	referer       string
	status        int
	responseBytes int64
	traceID       oteltrace.TraceID // zero when the request is not traced
}

// Layer logs every request it serves once the response is over (also when
// the handler broke off). A nil Logger logs nothing and adds no layer.
func (l *Logger) Layer(next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := l.now()
		cw := &countingWriter{ResponseWriter: w}
		httpproxy.Observe(next, cw, r, func(o httpproxy.Outcome) {
			e := entry{
				start: start, duration: l.now().Sub(start),
				host: r.Host, method: r.Method, uri: requestURI(r), version: r.Proto,
				userAgent: r.Header.Get("User-Agent"), referer: r.Header.Get("Referer"),
				status: o.Status, responseBytes: cw.n,
				traceID: oteltrace.SpanContextFromContext(r.Context()).TraceID(),
			}
			if m := transport.MetaFrom(r.Context()); m != nil {
				e.direction, e.client, e.clientID = string(m.Direction), m.Client, m.ClientID
			}
			b := l.pool.Get().(*[]byte)
			if l.json {
				*b = appendJSON(*b, &e)
			} else {
				*b = appendApache(*b, &e)
			}
			l.enqueue(b)
		})
	})
}

// requestURI is the request target as the client sent it: origin form,
// absolute form (forward-proxy requests) or, for CONNECT, the authority.
func requestURI(r *http.Request) string {
	switch {
	case r.Method == http.MethodConnect:
		return r.Host
	case r.RequestURI != "":
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// countingWriter counts the response body bytes.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
