package trace

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/trace/tracetest"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

const (
	selfID   = "spiffe://cluster.local/ns/shop/sa/api"
	clientID = "spiffe://cluster.local/ns/shop/sa/web"
	peerID   = "spiffe://cluster.local/ns/shop/sa/db"
)

// hop is a tracer's layer in a real HTTP server; the innermost handler
// stands for the forwarder and keeps the headers the request would go on
// with.
type hop struct {
	rcv *tracetest.Receiver
	tr  *Tracer
	url string
	mu  sync.Mutex
	out []http.Header
}

func newHop(t *testing.T, dir transport.Direction, ratio float64, inner ...func(*Tracer) httpproxy.Layer) *hop {
	h := &hop{rcv: tracetest.Start(t)}
	tr, err := New(Config{Collector: h.rcv.Addr(), SampleRatio: ratio, ServiceName: "api", Identity: selfID, Workload: "api-0"})
	if err != nil {
		t.Fatal(err)
	}
	h.tr = tr
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.out = append(h.out, r.Header.Clone())
		h.mu.Unlock()
		switch r.URL.Path {
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/grpc":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Grpc-Status", "14")
		default:
			io.WriteString(w, "ok")
		}
	})
	layers := []httpproxy.Layer{tr.Layer(dir)}
	for _, l := range inner {
		layers = append(layers, l(tr))
	}
	stack := httpproxy.Stack(app, layers...)
	m := &transport.Meta{Direction: dir, Client: netip.MustParseAddrPort("192.0.2.10:51160")}
	if dir == transport.Inbound {
		m.ClientID = clientID
	} else {
		m.Target, m.PeerIdentity = "10.0.0.7:8080", peerID
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stack.ServeHTTP(w, r.WithContext(transport.WithMeta(r.Context(), m)))
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func (h *hop) do(t *testing.T, path string, header map[string]string) http.Header {
	t.Helper()
	testkit.Get(t, h.url+path, "api.shop:8080", header)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out[len(h.out)-1]
}

// spans flushes the tracer and returns what the receiver got.
func (h *hop) spans(t *testing.T) []tracetest.Span {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	return h.rcv.Spans()
}

func only(t *testing.T, spans []tracetest.Span) tracetest.Span {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%d spans; want 1: %+v", len(spans), spans)
	}
	return spans[0]
}

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

func TestW3CParentIsContinued(t *testing.T) {
	h := newHop(t, transport.Inbound, 1)
	out := h.do(t, "/items", map[string]string{
		"Traceparent": "00-" + parentTrace + "-" + parentSpan + "-01",
		"Tracestate":  "vendor=opaque",
		"User-Agent":  "curl/8.5.0",
	})
	s := only(t, h.spans(t))
	if s.TraceID != parentTrace || s.ParentSpanID != parentSpan || s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.Name != "GET" {
		t.Errorf("span %+v; want a server span GET, child of %s", s, parentSpan)
	}
	if want := "00-" + parentTrace + "-" + s.SpanID + "-01"; out.Get("Traceparent") != want {
		t.Errorf("sent on with traceparent %q; want %q", out.Get("Traceparent"), want)
	}
	if out.Get("Tracestate") != "vendor=opaque" || s.TraceState != "vendor=opaque" {
		t.Errorf("tracestate %q sent, %q on the span; want vendor=opaque kept", out.Get("Tracestate"), s.TraceState)
	}
	if out.Get("B3") != "" || out.Get("X-B3-Traceid") != "" {
		t.Errorf("B3 added to a W3C request: %v", out)
	}
	want := map[string]any{
		"http.request.method": "GET", "url.path": "/items", "server.address": "api.shop", "server.port": int64(8080),
		"http.response.status_code": int64(200), "network.peer.address": "192.0.2.10", "network.peer.port": int64(51160),
		"network.protocol.version": "1.1", "user_agent.original": "curl/8.5.0",
		"trellis.direction": "inbound", "trellis.client_id": clientID, "trellis.server_id": selfID,
	}
	for k, v := range want {
		if s.Attributes[k] != v {
			t.Errorf("attribute %s = %#v; want %#v", k, s.Attributes[k], v)
		}
	}
	if s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("status %v for a 200", s.Status)
	}
	for k, v := range map[string]any{"service.name": "api", "service.instance.id": "api-0", "trellis.identity": selfID} {
		if s.Resource[k] != v {
			t.Errorf("resource %s = %#v; want %#v", k, s.Resource[k], v)
		}
	}
}

func TestB3SingleInB3SingleAndW3COut(t *testing.T) {
	h := newHop(t, transport.Inbound, 1)
	out := h.do(t, "/", map[string]string{"B3": parentTrace + "-" + parentSpan + "-1"})
	s := only(t, h.spans(t))
	if s.TraceID != parentTrace || s.ParentSpanID != parentSpan {
		t.Fatalf("span %+v; want the child of the B3 parent", s)
	}
	if got, want := out.Get("B3"), parentTrace+"-"+s.SpanID+"-1"; got != want {
		t.Errorf("b3 %q; want %q", got, want)
	}
	if got, want := out.Get("Traceparent"), "00-"+parentTrace+"-"+s.SpanID+"-01"; got != want {
		t.Errorf("traceparent %q; want %q", got, want)
	}
	if out.Get("X-B3-Traceid") != "" {
		t.Errorf("multi-header B3 added to a single-header request: %v", out)
	}
}

func TestB3MultiInB3MultiAndW3COut(t *testing.T) {
	h := newHop(t, transport.Outbound, 1)
	out := h.do(t, "/", map[string]string{
		"X-B3-TraceId": parentTrace, "X-B3-SpanId": parentSpan, "X-B3-ParentSpanId": "1111111111111111", "X-B3-Sampled": "1",
	})
	s := only(t, h.spans(t))
	if s.TraceID != parentTrace || s.ParentSpanID != parentSpan || s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Fatalf("span %+v; want a client span, child of the B3 parent", s)
	}
	for k, want := range map[string]string{
		"X-B3-Traceid": parentTrace, "X-B3-Spanid": s.SpanID, "X-B3-Sampled": "1", "X-B3-Parentspanid": "",
		"B3": "", "Traceparent": "00-" + parentTrace + "-" + s.SpanID + "-01",
	} {
		if got := out.Get(k); got != want {
			t.Errorf("%s: %q; want %q", k, got, want)
		}
	}
	for k, v := range map[string]any{"trellis.direction": "outbound", "trellis.client_id": selfID, "trellis.server_id": peerID, "network.peer.address": "10.0.0.7"} {
		if s.Attributes[k] != v {
			t.Errorf("attribute %s = %#v; want %#v", k, s.Attributes[k], v)
		}
	}
}

func TestNewTraceWhenNoParent(t *testing.T) {
	h := newHop(t, transport.Outbound, 1)
	out := h.do(t, "/", nil)
	s := only(t, h.spans(t))
	if s.ParentSpanID != "" || len(s.TraceID) != 32 {
		t.Fatalf("span %+v; want a root span", s)
	}
	if got, want := out.Get("Traceparent"), "00-"+s.TraceID+"-"+s.SpanID+"-01"; got != want {
		t.Errorf("traceparent %q; want %q", got, want)
	}
}

func TestUnsampledIsPropagatedNotRecorded(t *testing.T) {
	h := newHop(t, transport.Inbound, 0)
	fresh := h.do(t, "/", nil)
	continued := h.do(t, "/", map[string]string{"Traceparent": "00-" + parentTrace + "-" + parentSpan + "-00"})
	if spans := h.spans(t); len(spans) != 0 {
		t.Fatalf("%d spans recorded at ratio 0 and for an unsampled parent", len(spans))
	}
	if tp := fresh.Get("Traceparent"); !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("new unsampled trace sent on as %q; want an unsampled traceparent, so the next hop agrees", tp)
	}
	if tp := continued.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+parentTrace+"-") || !strings.HasSuffix(tp, "-00") || strings.Contains(tp, parentSpan) {
		t.Errorf("unsampled parent sent on as %q; want its trace, a new span, unsampled", tp)
	}
}

func TestSampledParentRecordedAtRatioZero(t *testing.T) {
	h := newHop(t, transport.Inbound, 0)
	h.do(t, "/", map[string]string{"Traceparent": "00-" + parentTrace + "-" + parentSpan + "-01"})
	if s := only(t, h.spans(t)); s.TraceID != parentTrace {
		t.Fatalf("span %+v", s)
	}
}

func TestErrorStatus(t *testing.T) {
	h := newHop(t, transport.Inbound, 1)
	h.do(t, "/503", nil)
	h.do(t, "/grpc", nil)
	spans := h.spans(t)
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	byPath := map[string]tracetest.Span{}
	for _, s := range spans {
		byPath[s.Attributes["url.path"].(string)] = s
	}
	if s := byPath["/503"]; s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Attributes["http.response.status_code"] != int64(503) {
		t.Errorf("503 span: status %v, attributes %v", s.Status, s.Attributes)
	}
	if s := byPath["/grpc"]; s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Attributes["rpc.grpc.status_code"] != int64(14) {
		t.Errorf("gRPC UNAVAILABLE span: status %v, attributes %v", s.Status, s.Attributes)
	}
}

// route stands for the route and balance stages: it picks a route and an
// endpoint.
func route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := explain.With(r.Context(), &explain.Decision{})
		ctx = httpproxy.WithRoute(ctx, "shop/api-route", "HTTPRoute")
		ctx = httpproxy.WithTarget(ctx, "10.0.0.9:8080", "spiffe://cluster.local/ns/shop/sa/api-v2", "")
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func TestAnnotateNamesSpanByRouteAndEndpoint(t *testing.T) {
	h := newHop(t, transport.Outbound, 1,
		func(*Tracer) httpproxy.Layer { return route },
		(*Tracer).Annotate,
	)
	h.do(t, "/", nil)
	s := only(t, h.spans(t))
	if s.Name != "GET shop/api-route" {
		t.Errorf("span name %q", s.Name)
	}
	for k, v := range map[string]any{
		"trellis.route": "shop/api-route", "trellis.route_kind": "HTTPRoute",
		"network.peer.address": "10.0.0.9", "trellis.server_id": "spiffe://cluster.local/ns/shop/sa/api-v2",
	} {
		if s.Attributes[k] != v {
			t.Errorf("attribute %s = %#v; want %#v", k, s.Attributes[k], v)
		}
	}
}

func TestNilTracerAddsNothing(t *testing.T) {
	var tr *Tracer
	app := &marker{}
	for _, l := range []httpproxy.Layer{tr.Layer(transport.Inbound), tr.Layer(transport.Outbound), tr.Annotate()} {
		if h := l(app); h != http.Handler(app) {
			t.Fatalf("a nil Tracer wrapped the handler in %T", h)
		}
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type marker struct{}

func (*marker) ServeHTTP(http.ResponseWriter, *http.Request) {}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{}, {Collector: "127.0.0.1:4317", SampleRatio: 1.5}, {Collector: "127.0.0.1:4317", SampleRatio: -0.1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
