package trace

import (
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Span attributes: the OpenTelemetry HTTP semantic conventions, the gRPC
// status code, and the mesh's own.
const (
	attrMethod         = attribute.Key("http.request.method")
	attrMethodOriginal = attribute.Key("http.request.method_original")
	attrStatus         = attribute.Key("http.response.status_code")
	attrGRPCStatus     = attribute.Key("rpc.grpc.status_code")
	attrPath           = attribute.Key("url.path")
	attrServerAddress  = attribute.Key("server.address")
	attrServerPort     = attribute.Key("server.port")
	attrPeerAddress    = attribute.Key("network.peer.address")
	attrPeerPort       = attribute.Key("network.peer.port")
	attrProtoVersion   = attribute.Key("network.protocol.version")
	attrUserAgent      = attribute.Key("user_agent.original")
	attrErrorType      = attribute.Key("error.type")
	attrDirection      = attribute.Key("trellis.direction")
	attrClientID       = attribute.Key("trellis.client_id")
	attrServerID       = attribute.Key("trellis.server_id")
	attrRoute          = attribute.Key("trellis.route")
	attrRouteKind      = attribute.Key("trellis.route_kind")
	attrAttempt        = attribute.Key("trellis.attempt")
)

// Layer gives every request a span of the hop through the proxy in
// direction dir and sends it on carrying the span's context. It belongs at
// the top of the stack, so that the span covers the whole hop. A nil Tracer
// adds no layer.
func (t *Tracer) Layer(dir transport.Direction) httpproxy.Layer {
	if t == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	kind := oteltrace.SpanKindServer
	if dir == transport.Outbound {
		kind = oteltrace.SpanKindClient
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			enc := b3Of(r.Header)
			method, known := knownMethod(r.Method)
			ctx, span := t.tracer.Start(t.extract(r.Context(), r.Header, enc), method, oteltrace.WithSpanKind(kind))
			t.inject(ctx, r.Header, enc)
			recording := span.IsRecording()
			if recording {
				span.SetAttributes(t.requestAttributes(r, dir, method, known)...)
			}
			httpproxy.Observe(next, w, r.WithContext(ctx), func(o httpproxy.Outcome) {
				if recording {
					outcome(span, o)
				}
				span.End()
			})
		})
	}
}

// Annotate records on the hop's span what the stages between it and the
// top decided: the route (which names the span), and the endpoint and its
// proxy's identity. It belongs right after the balance stage. A nil Tracer
// adds no layer.
func (t *Tracer) Annotate() httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		if t == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if span := oteltrace.SpanFromContext(ctx); span.IsRecording() {
				route, kind := httpproxy.Route(ctx)
				if route != "" {
					method, _ := knownMethod(r.Method)
					span.SetName(method + " " + route)
					span.SetAttributes(attrRoute.String(route), attrRouteKind.String(kind))
				}
				// A mirrored copy of a routed request has no decision
				// record of its own: its endpoint is not the hop's.
				if route == "" || explain.From(ctx) != nil {
					attrs := peerAttributes(httpproxy.Target(ctx), nil)
					if peer := httpproxy.Peer(ctx); peer != "" {
						attrs = append(attrs, attrServerID.String(peer))
					}
					span.SetAttributes(attrs...)
					if why := explain.Why(ctx); why != "" {
						span.AddEvent(why, oteltrace.WithAttributes(append(attrs, attrAttempt.String(why))...))
					}
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requestAttributes describe the request as the hop received it.
func (t *Tracer) requestAttributes(r *http.Request, dir transport.Direction, method string, known bool) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs, attrDirection.String(string(dir)))
	if known {
		attrs = append(attrs, attrMethod.String(method))
	} else {
		attrs = append(attrs, attrMethod.String("_OTHER"), attrMethodOriginal.String(r.Method))
	}
	if r.Method != http.MethodConnect {
		attrs = append(attrs, attrPath.String(r.URL.Path))
	}
	host, port := splitHostPort(r.Host)
	if host != "" {
		attrs = append(attrs, attrServerAddress.String(host))
	}
	if port > 0 {
		attrs = append(attrs, attrServerPort.Int(port))
	}
	switch {
	case r.ProtoMajor == 2:
		attrs = append(attrs, attrProtoVersion.String("2"))
	case r.ProtoMajor == 1:
		attrs = append(attrs, attrProtoVersion.String("1."+strconv.Itoa(r.ProtoMinor)))
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		attrs = append(attrs, attrUserAgent.String(ua))
	}
	m := transport.MetaFrom(r.Context())
	if dir == transport.Inbound {
		if m != nil && m.Client.IsValid() {
			attrs = append(attrs, attrPeerAddress.String(m.Client.Addr().Unmap().String()), attrPeerPort.Int(int(m.Client.Port())))
		}
		if m != nil && m.ClientID != "" {
			attrs = append(attrs, attrClientID.String(m.ClientID))
		}
		if t.identity != "" {
			attrs = append(attrs, attrServerID.String(t.identity))
		}
		return attrs
	}
	attrs = peerAttributes(httpproxy.Target(r.Context()), attrs)
	if t.identity != "" {
		attrs = append(attrs, attrClientID.String(t.identity))
	}
	if peer := httpproxy.Peer(r.Context()); peer != "" {
		attrs = append(attrs, attrServerID.String(peer))
	}
	return attrs
}

// peerAttributes appends the address a request is sent to.
func peerAttributes(target string, attrs []attribute.KeyValue) []attribute.KeyValue {
	host, port := splitHostPort(target)
	if host == "" {
		return attrs
	}
	attrs = append(attrs, attrPeerAddress.String(host))
	if port > 0 {
		attrs = append(attrs, attrPeerPort.Int(port))
	}
	return attrs
}

// outcome records how the response went; 5xx, a gRPC status other than OK
// and a broken-off response are errors.
func outcome(span oteltrace.Span, o httpproxy.Outcome) {
	if o.Status > 0 {
		span.SetAttributes(attrStatus.Int(o.Status))
	}
	if o.GRPCStatus >= 0 {
		span.SetAttributes(attrGRPCStatus.Int(o.GRPCStatus))
	}
	switch {
	case !o.Completed:
		span.SetAttributes(attrErrorType.String("response broke off"))
		span.SetStatus(codes.Error, "response broke off")
	case o.Status >= 500:
		code := strconv.Itoa(o.Status)
		span.SetAttributes(attrErrorType.String(code))
		span.SetStatus(codes.Error, "HTTP "+code)
	case o.GRPCStatus > 0:
		code := strconv.Itoa(o.GRPCStatus)
		span.SetAttributes(attrErrorType.String(code))
		span.SetStatus(codes.Error, "gRPC status "+code)
	}
}

// knownMethod is the method as the span's name has it: the standard
// methods, and "HTTP" for any other (which would make names unbounded).
func knownMethod(m string) (string, bool) {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m, true
	}
	return "HTTP", false
}

// splitHostPort splits an authority; the port is 0 if it has none.
func splitHostPort(hostport string) (string, int) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}
