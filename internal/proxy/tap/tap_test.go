package tap_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/tap/taptest"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

var (
	// proxyID is the tapped proxy's identity, peerID a client proxy's.
	proxyID = identity.ID{TrustDomain: taptest.TrustDomain, Namespace: "default", ServiceAccount: "web"}
	peerID  = identity.ID{TrustDomain: taptest.TrustDomain, Namespace: "default", ServiceAccount: "api"}
)

// backend answers /hello with 201 and 11 bytes, /grpc with a grpc-status
// trailer, /broken with half a body before it hangs up, and /slow not
// before the request is cancelled.
func backend(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/grpc":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			io.WriteString(w, "abc")
			w.Header().Set("Grpc-Status", "7")
		case "/slow":
			<-r.Context().Done()
		case "/broken":
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "0123456789")
			http.NewResponseController(w).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "hello world")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// forwarder is the proxy's own forwarding stage.
func forwarder(dir transport.Direction) http.Handler {
	return httpproxy.NewForwarder(httpproxy.ForwardConfig{Direction: dir}, &transport.Dialer{Timeout: 5 * time.Second, Registry: metrics.NewRegistry()}, slog.New(slog.DiscardHandler))
}

// stack serves a miniature proxy stack on loopback: what the accept and
// detect stages record about the connection (in), the tap layer, then
// inner. It returns the URL.
func stack(t *testing.T, hub *tap.Hub, dir transport.Direction, in func(r *http.Request, m *transport.Meta) context.Context, inner http.Handler) string {
	t.Helper()
	tapped := tap.Layer(hub, string(dir))(inner)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := &transport.Meta{Direction: dir, Protocol: "http/1"}
		m.Client, _ = netip.ParseAddrPort(r.RemoteAddr)
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			m.Local, _ = netip.ParseAddrPort(a.String())
		}
		ctx := transport.WithMeta(r.Context(), m)
		if in != nil {
			ctx = in(r, m)
			ctx = transport.WithMeta(ctx, m)
		}
		tapped.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// inboundFrom makes requests arrive from the peer proxy over mTLS, for target.
func inboundFrom(target string) func(*http.Request, *transport.Meta) context.Context {
	return func(r *http.Request, m *transport.Meta) context.Context {
		m.Target, m.TLS, m.ClientID = target, "true", peerID.String()
		return r.Context()
	}
}

// get sends a request with Host host and returns the status and body.
func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// dial connects to a tap server at addr with cert (none if nil), trusting
// anchors and expecting the server to be server.
func dial(t *testing.T, anchors *x509.CertPool, cert *tls.Certificate, addr string, server identity.ID, opts ...grpc.DialOption) tapv1.TapClient {
	t.Helper()
	cfg := proxyid.ClientConfig(anchors, server, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	})
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return tapv1.NewTapClient(cc)
}

// recv reads n events.
func recv(t *testing.T, s grpc.ServerStreamingClient[tapv1.TapEvent], n int) []*tapv1.TapEvent {
	t.Helper()
	var evs []*tapv1.TapEvent
	for len(evs) < n {
		ev, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(evs), n, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestObserveOverMTLS(t *testing.T) {
	p := taptest.NewPKI(t)
	hub := tap.NewHub(tap.HubConfig{Identity: proxyID.String()})
	be := backend(t)
	beAddr := strings.TrimPrefix(be.URL, "http://")
	front := stack(t, hub, transport.Inbound, inboundFrom(beAddr), forwarder(transport.Inbound))
	addr := taptest.StartServer(t, p, hub, proxyID, taptest.ControlPlane)
	c := dial(t, p.Anchors(), p.Cert(t, taptest.ControlPlane), addr, proxyID)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Observe(ctx, &tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the subscription", hub.Active)

	before := time.Now()
	if code, body := get(t, front+"/hello?secret=1", "web.default.svc.cluster.local:8080"); code != http.StatusCreated || body != "hello world" {
		t.Fatalf("got %d %q", code, body)
	}
	evs := recv(t, stream, 3)
	for i, ev := range evs {
		if ev.GetId() != evs[0].GetId() || ev.GetId() == 0 {
			t.Errorf("event %d: id %d, want the request's (%d)", i, ev.GetId(), evs[0].GetId())
		}
		if ev.GetDirection() != "inbound" || ev.GetDestination() != beAddr || !ev.GetTls() ||
			ev.GetClientId() != peerID.String() || ev.GetServerId() != proxyID.String() || ev.GetLabels()["protocol"] != "http/1" {
			t.Errorf("event %d: %v", i, ev)
		}
		if ap, err := netip.ParseAddrPort(ev.GetSource()); err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("event %d: source %q", i, ev.GetSource())
		}
	}
	ri := evs[0].GetRequestInit()
	if ri == nil || ri.GetMethod() != "GET" || ri.GetScheme() != "http" || ri.GetAuthority() != "web.default.svc.cluster.local:8080" || ri.GetPath() != "/hello" {
		t.Fatalf("first event is not the request head: %v", evs[0])
	}
	if ts := ri.GetTimestamp().AsTime(); ts.Before(before.Add(-time.Second)) || ts.After(time.Now()) {
		t.Errorf("request timestamp %v, sent at %v", ts, before)
	}
	rsp := evs[1].GetResponseInit()
	if rsp == nil || rsp.GetStatus() != http.StatusCreated || rsp.GetSinceRequestInit().AsDuration() <= 0 {
		t.Fatalf("second event is not the response head: %v", evs[1])
	}
	end := evs[2].GetResponseEnd()
	if end == nil || end.GetResponseBytes() != 11 || end.GetGrpcStatus() != -1 || end.GetError() != "" ||
		end.GetSinceRequestInit().AsDuration() < rsp.GetSinceRequestInit().AsDuration() {
		t.Fatalf("third event is not the response end: %v", evs[2])
	}

	firstID := evs[0].GetId()
	if code, body := get(t, front+"/grpc", "web"); code != http.StatusOK || body != "abc" {
		t.Fatalf("got %d %q", code, body)
	}
	evs = recv(t, stream, 3)
	if end := evs[2].GetResponseEnd(); end == nil || end.GetGrpcStatus() != 7 || end.GetResponseBytes() != 3 {
		t.Fatalf("grpc-status from trailers: %v", evs[2])
	}
	if evs[0].GetId() <= firstID {
		t.Errorf("request ids do not grow: %d after %d", evs[0].GetId(), firstID)
	}

	cancel()
	testkit.WaitFor(t, "the stream to unsubscribe", func() bool { return !hub.Active() })
}

func TestResponseErrors(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{})
	sub, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	be := backend(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, tc := range []struct {
		name, target, path string
		wantStatus         uint32 // 0: no response head
		wantBytes          uint64
		wantErr            string
	}{
		{"upstream breaks off", strings.TrimPrefix(be.URL, "http://"), "/broken", 200, 10, "response aborted"},
		{"connection refused", deadAddr, "/", 502, uint64(len("connection refused\n")), "connection refused"},
		{"client hangs up", strings.TrimPrefix(be.URL, "http://"), "/slow", 0, 0, "client went away"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front := stack(t, hub, transport.Inbound, inboundFrom(tc.target), forwarder(transport.Inbound))
			if resp, err := (&http.Client{Timeout: 300 * time.Millisecond}).Get(front + tc.path); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			var evs []*tapv1.TapEvent
			for len(evs) == 0 || evs[len(evs)-1].GetResponseEnd() == nil {
				select {
				case ev := <-sub.Events():
					evs = append(evs, ev)
				case <-time.After(10 * time.Second):
					t.Fatalf("got %d events: %v", len(evs), evs)
				}
			}
			var status uint32
			if len(evs) == 3 {
				status = evs[1].GetResponseInit().GetStatus()
			}
			if status != tc.wantStatus || len(evs) != 2 && tc.wantStatus == 0 {
				t.Errorf("response status %d (%d events), want %d", status, len(evs), tc.wantStatus)
			}
			end := evs[len(evs)-1].GetResponseEnd()
			if end.GetError() != tc.wantErr || end.GetResponseBytes() != tc.wantBytes {
				t.Errorf("response end %v, want error %q after %d bytes", end, tc.wantErr, tc.wantBytes)
			}
		})
	}
}

func TestOutboundEvents(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{Identity: proxyID.String()})
	sub, err := hub.Subscribe(&tapv1.ObserveRequest{Direction: "outbound"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}) // writes nothing: an empty 200
	front := stack(t, hub, transport.Outbound, func(r *http.Request, m *transport.Meta) context.Context {
		dst := metrics.RenderDst(map[string]string{"dst_service": "api", "dst_namespace": "default", "dst_workload": "api-1"})
		ctx := httpproxy.WithTarget(r.Context(), "10.1.2.3:8080", peerID.String(), dst)
		return httpproxy.WithRoute(ctx, "default/api-route", "HTTPRoute")
	}, inner)
	get(t, front+"/x", "api.default:8080")
	for i := 0; i < 3; i++ {
		var ev *tapv1.TapEvent
		select {
		case ev = <-sub.Events():
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		if ev.GetDirection() != "outbound" || ev.GetDestination() != "10.1.2.3:8080" || !ev.GetTls() || ev.GetServerId() != peerID.String() ||
			ev.GetClientId() != proxyID.String() || ev.GetRoute() != "default/api-route" || ev.GetLabels()["route_kind"] != "HTTPRoute" ||
			ev.GetLabels()["dst_service"] != "api" || ev.GetLabels()["dst_namespace"] != "default" || ev.GetLabels()["dst_workload"] != "api-1" {
			t.Errorf("event %d: %v", i, ev)
		}
		if i == 1 && ev.GetResponseInit().GetStatus() != 200 {
			t.Errorf("an empty response is a 200: %v", ev)
		}
	}
}

func TestRefusesOtherClients(t *testing.T) {
	p := taptest.NewPKI(t)
	hub := tap.NewHub(tap.HubConfig{})
	addr := taptest.StartServer(t, p, hub, proxyID, taptest.ControlPlane)
	foreign := taptest.NewPKI(t)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		code codes.Code
		msg  string
	}{
		{"another workload", p.Cert(t, peerID), codes.PermissionDenied, peerID.String() + " may not tap this proxy; only " + taptest.ControlPlane.String() + " may"},
		{"the control plane's name from another trust anchor", foreign.Cert(t, taptest.ControlPlane), codes.Unavailable, ""},
		{"no client certificate", nil, codes.Unavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.Anchors(), tc.cert, addr, proxyID)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			stream, err := c.Observe(ctx, &tapv1.ObserveRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want %v %q", err, tc.code, tc.msg)
			}
			if hub.Active() {
				t.Fatal("a refused client subscribed")
			}
		})
	}
}

func TestMatch(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{})
	all, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	be := backend(t)
	beAddr := strings.TrimPrefix(be.URL, "http://")
	in := stack(t, hub, transport.Inbound, inboundFrom(beAddr), forwarder(transport.Inbound))
	out := stack(t, hub, transport.Outbound, func(r *http.Request, m *transport.Meta) context.Context {
		m.Target = beAddr
		return r.Context()
	}, forwarder(transport.Outbound))

	type request struct{ front, method, path, host string }
	requests := []request{
		{in, "GET", "/api/users", "web.default:8080"},
		{in, "POST", "/api/users", "web.default:8080"},
		{in, "GET", "/static/app.js", "WEB.default:8080"},
		{out, "GET", "/api/orders", "orders.shop:9090"},
		{out, "DELETE", "/other", "payments.shop:9090"},
	}
	for _, tc := range []struct {
		name string
		req  *tapv1.ObserveRequest
		want []int // indexes of requests
	}{
		{"everything", &tapv1.ObserveRequest{}, []int{0, 1, 2, 3, 4}},
		{"method", &tapv1.ObserveRequest{Method: "get"}, []int{0, 2, 3}},
		{"path prefix", &tapv1.ObserveRequest{PathPrefix: "/api/"}, []int{0, 1, 3}},
		{"authority", &tapv1.ObserveRequest{Authority: "web.default:8080"}, []int{0, 1, 2}},
		{"direction", &tapv1.ObserveRequest{Direction: "outbound"}, []int{3, 4}},
		{"to authority", &tapv1.ObserveRequest{To: "shop"}, []int{3, 4}},
		{"to target", &tapv1.ObserveRequest{To: beAddr, Direction: "inbound"}, []int{0, 1, 2}},
		{"all of them", &tapv1.ObserveRequest{Method: "GET", PathPrefix: "/api", Direction: "outbound", To: "orders"}, []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := hub.Subscribe(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var got []int
			for i, rq := range requests {
				req, _ := http.NewRequest(rq.method, rq.front+rq.path, nil)
				req.Host = rq.host
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// all is subscribed before sub, so once all has the
				// request's end, sub has everything it will get of it.
				for done := false; !done; {
					select {
					case ev := <-all.Events():
						done = ev.GetResponseEnd() != nil
					case <-time.After(10 * time.Second):
						t.Fatal("no response end")
					}
				}
				n := 0
				for drained := false; !drained; {
					select {
					case <-sub.Events():
						n++
					default:
						drained = true
					}
				}
				switch n {
				case 0:
				case 3:
					got = append(got, i)
				default:
					t.Fatalf("request %d: %d events, want 0 or 3", i, n)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("matched requests %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := hub.Subscribe(&tapv1.ObserveRequest{Direction: "sideways"}); !errors.Is(err, tap.ErrInvalidRequest) {
		t.Errorf("unknown direction: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{MaxRPS: 50})
	for _, tc := range []struct{ ask, want uint32 }{{0, 50}, {1000, 50}, {7, 7}} {
		sub, err := hub.Subscribe(&tapv1.ObserveRequest{MaxRps: tc.ask})
		if err != nil {
			t.Fatal(err)
		}
		if got := sub.MaxRPS(); got != int(tc.want) {
			t.Errorf("max_rps %d: limit %d, want %d", tc.ask, got, tc.want)
		}
		sub.Close()
	}

	const rps, requests = 3, 40
	sub, err := hub.Subscribe(&tapv1.ObserveRequest{MaxRps: rps})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	front := stack(t, hub, transport.Inbound, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	start := time.Now()
	for i := 0; i < requests; i++ {
		if code, _ := get(t, front, "web"); code != http.StatusOK {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	elapsed := time.Since(start)
	inits, ends := 0, 0
	for drained := false; !drained; {
		select {
		case ev := <-sub.Events():
			if ev.GetRequestInit() != nil {
				inits++
			}
			if ev.GetResponseEnd() != nil {
				ends++
			}
		default:
			drained = true
		}
	}
	// The burst is one second's worth; time adds rps per second.
	max := rps + int(elapsed.Seconds()*rps) + 1
	if inits < rps || inits > max || ends != inits {
		t.Errorf("%d requests in %v: %d reported (%d ended), want %d…%d, all ended", requests, elapsed, inits, ends, rps, max)
	}
}

func TestFullQueueDoesNotBlock(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{Queue: 2})
	sub, err := hub.Subscribe(&tapv1.ObserveRequest{}) // never read
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	front := stack(t, hub, transport.Inbound, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	const requests = 20
	for i := 0; i < requests; i++ {
		if code, _ := get(t, front, "web"); code != http.StatusOK {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	// The last request's end may still be on its way after its response.
	var dropped uint64
	testkit.WaitFor(t, "every event to be counted", func() bool {
		dropped += sub.TakeDropped()
		return len(sub.Events())+int(dropped) == 3*requests
	})
	if len(sub.Events()) != 2 {
		t.Errorf("queue holds %d events, want 2", len(sub.Events()))
	}
}

func TestSlowStreamIsToldWhatItMissed(t *testing.T) {
	p := taptest.NewPKI(t)
	hub := tap.NewHub(tap.HubConfig{Queue: 1, MaxRPS: 1 << 20})
	addr := taptest.StartServer(t, p, hub, proxyID, taptest.ControlPlane)
	// A fixed flow-control window: the proxy can send only so much before
	// the client reads.
	c := dial(t, p.Anchors(), p.Cert(t, taptest.ControlPlane), addr, proxyID, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Observe(ctx, &tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the subscription", hub.Active)
	h := tap.Layer(hub, "inbound")(http.HandlerFunc(okHandler))
	w := &noopWriter{h: http.Header{}}
	const requests = 5000 // far more than the window holds
	start := time.Now()
	for i := 0; i < requests; i++ {
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	}
	t.Logf("%d requests served in %v while the stream was not read", requests, time.Since(start))
	var received, dropped uint64
	for received+dropped < 3*requests {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d events and %d dropped: %v", received, dropped, err)
		}
		if ev.GetEvent() == nil {
			dropped += ev.GetDropped()
		} else {
			received++
		}
	}
	if dropped == 0 || received+dropped != 3*requests {
		t.Errorf("%d events received, %d reported dropped; want some dropped, %d in all", received, dropped, 3*requests)
	}
}

func TestStopEndsStreams(t *testing.T) {
	p := taptest.NewPKI(t)
	hub := tap.NewHub(tap.HubConfig{})
	srv, err := tap.NewServer(hub, p.Creds(t, proxyID), taptest.ControlPlane, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c := dial(t, p.Anchors(), p.Cert(t, taptest.ControlPlane), ln.Addr().String(), proxyID)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		stream, err := c.Observe(context.Background(), &tapv1.ObserveRequest{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := stream.Recv()
			errs <- err
		}()
	}
	testkit.WaitFor(t, "three subscriptions", func() bool { return hub.Subscribers() == 3 })
	srv.Stop()
	if err := <-served; err != nil {
		t.Errorf("Serve after Stop: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("stream ended with %v, want UNAVAILABLE: shutting down", err)
		}
	}
	if hub.Active() {
		t.Error("subscriptions outlived the server")
	}
}

// noopWriter is a response writer that costs nothing.
type noopWriter struct{ h http.Header }

func (w *noopWriter) Header() http.Header         { return w.h }
func (w *noopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *noopWriter) WriteHeader(int)             {}

type noopHandler struct{}

func (*noopHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

var ok = []byte("ok")

func okHandler(w http.ResponseWriter, r *http.Request) { w.Write(ok) }

func TestIdleLayerCostsNothing(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{})
	h := tap.Layer(hub, "inbound")(http.HandlerFunc(okHandler))
	w := &noopWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if hub.Active() {
		t.Fatal("a new hub is active")
	}
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("idle layer: %v allocations per request, want 0", n)
	}
	// After the last subscriber leaves, the layer is idle again.
	sub, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(w, r)
	if len(sub.Events()) != 3 {
		t.Fatalf("active layer: %d events, want 3", len(sub.Events()))
	}
	sub.Close()
	if hub.Active() {
		t.Fatal("hub still active after its only subscriber left")
	}
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("layer after unsubscribing: %v allocations per request, want 0", n)
	}
	// A nil hub is no layer at all.
	inner := &noopHandler{}
	if got := tap.Layer(nil, "inbound")(inner); got != http.Handler(inner) {
		t.Error("Layer(nil) wraps its handler")
	}
}

func BenchmarkLayer(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/bench", nil)
	r = r.WithContext(transport.WithMeta(r.Context(), &transport.Meta{Direction: transport.Inbound, Client: netip.MustParseAddrPort("10.0.0.1:40000"), Target: "127.0.0.1:8080", Protocol: "h2"}))
	w := &noopWriter{h: http.Header{}}
	b.Run("idle", func(b *testing.B) {
		h := tap.Layer(tap.NewHub(tap.HubConfig{}), "inbound")(http.HandlerFunc(okHandler))
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	b.Run("unmatched", func(b *testing.B) { // someone taps other traffic
		hub := tap.NewHub(tap.HubConfig{})
		sub, err := hub.Subscribe(&tapv1.ObserveRequest{PathPrefix: "/elsewhere"})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		h := tap.Layer(hub, "inbound")(http.HandlerFunc(okHandler))
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	b.Run("active", func(b *testing.B) {
		hub := tap.NewHub(tap.HubConfig{MaxRPS: 1 << 30})
		sub, err := hub.Subscribe(&tapv1.ObserveRequest{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		done := make(chan struct{})
		var drained sync.WaitGroup
		drained.Add(1)
		go func() {
			defer drained.Done()
			for {
				select {
				case <-sub.Events():
				case <-done:
					return
				}
			}
		}()
		h := tap.Layer(hub, "inbound")(http.HandlerFunc(okHandler))
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
		b.StopTimer()
		close(done)
		drained.Wait()
		b.ReportMetric(float64(sub.TakeDropped())/float64(b.N), "dropped/op")
	})
}

func TestMaxSubscribers(t *testing.T) {
	hub := tap.NewHub(tap.HubConfig{MaxSubscribers: 2})
	a, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Subscribe(&tapv1.ObserveRequest{}); !errors.Is(err, tap.ErrTooManySubscribers) {
		t.Fatalf("third subscriber: %v", err)
	}
	a.Close()
	a.Close() // twice is harmless
	if hub.Subscribers() != 1 {
		t.Fatalf("%d subscribers after one left", hub.Subscribers())
	}
	c, err := hub.Subscribe(&tapv1.ObserveRequest{})
	if err != nil {
		t.Fatalf("subscribing after one left: %v", err)
	}
	b.Close()
	c.Close()
	if hub.Active() {
		t.Fatal("active without subscribers")
	}
}
