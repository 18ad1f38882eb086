package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/proxy/trace/tracetest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// stoppable is a running proxy the test stops itself: stop returns once Run
// has, so everything the proxy buffers (spans, access log lines) is out.
type stoppable struct {
	*app.Proxy
	once sync.Once
	done chan error
}

func startStoppable(t *testing.T, cfg *config.Config) *stoppable {
	t.Helper()
	cfg.ShutdownGracePeriod = 5 * time.Second
	logs := &testkit.SyncBuffer{}
	p, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	s := &stoppable{Proxy: p, done: make(chan error, 1)}
	go func() { s.done <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("proxy %s log:\n%s", p.InboundAddr, logs.String())
		}
	})
	proxytest.WaitReady(t, "http://"+p.AdminAddr.String())
	return s
}

func (s *stoppable) stop(t *testing.T) {
	s.once.Do(func() {
		s.Shutdown()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("proxy: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("proxy did not stop within 15s")
		}
	})
}

// seen records the trace headers an application received.
type seen struct {
	mu sync.Mutex
	h  []http.Header
}

func (s *seen) add(h http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h = append(s.h, h.Clone())
}

func (s *seen) last(t *testing.T) http.Header {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.h) == 0 {
		t.Fatal("the application got no request")
	}
	return s.h[len(s.h)-1]
}

// recordingApp answers "from <name>" and records the headers it got.
func recordingApp(t *testing.T, name string, s *seen) string {
	return serveApp(t, func(w http.ResponseWriter, r *http.Request) {
		s.add(r.Header)
		fmt.Fprintf(w, "from %s", name)
	})
}

func spanOf(t *testing.T, spans []tracetest.Span, service string, kind tracepb.Span_SpanKind) tracetest.Span {
	t.Helper()
	for _, s := range spans {
		if s.Service() == service && s.Kind == kind {
			return s
		}
	}
	t.Fatalf("no %v span of %s among %+v", kind, service, spans)
	return tracetest.Span{}
}

func wantAttributes(t *testing.T, s tracetest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if s.Attributes[k] != v {
			t.Errorf("%s %v span: %s = %#v; want %#v", s.Service(), s.Kind, k, s.Attributes[k], v)
		}
	}
}

// One request, client → proxy A (outbound) → proxy B (inbound) → app B,
// which calls C (as an instrumented application would, passing the
// traceparent it got on) → proxy B (outbound) → proxy C (inbound) → app C,
// makes one connected trace.
func TestTraceAcrossMeshedServices(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	rcv := tracetest.Start(t)
	traced := func(cfg *config.Config, service string) {
		cfg.TraceCollector, cfg.TraceServiceName = rcv.Addr(), service
	}

	var atC, atB seen
	appC := recordingApp(t, "c", &atC)
	cCfg := proxytest.Config(t)
	cCfg.AppAddr = appC
	idC := ids.Join(t, cCfg, "shop", "c")
	traced(cCfg, "c")
	pc := startStoppable(t, cCfg)

	bCfg := proxytest.Config(t)
	idB := ids.Join(t, bCfg, "shop", "b")
	bCfg.MeshPort = port(pc.InboundAddr.String())
	toC := testkit.FreeAddr(t)
	bCfg.Upstreams = []config.Upstream{{Name: "c", LocalPort: port(toC), Target: appC, Identity: idC}}
	bCfg.AppAddr = serveApp(t, func(w http.ResponseWriter, r *http.Request) {
		atB.add(r.Header)
		req, _ := http.NewRequest("GET", "http://"+toC+"/inventory", nil)
		req.Header.Set("Traceparent", r.Header.Get("Traceparent"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "b, then %s", body)
	})
	accessB := &testkit.SyncBuffer{}
	bCfg.AccessLog, bCfg.AccessLogOutput = "json", accessB
	traced(bCfg, "b")
	pb := startStoppable(t, bCfg)

	aCfg := proxytest.Config(t)
	idA := ids.Join(t, aCfg, "shop", "a")
	aCfg.MeshPort = port(pb.InboundAddr.String())
	toB := testkit.FreeAddr(t)
	aCfg.Upstreams = []config.Upstream{{Name: "b", LocalPort: port(toB), Target: bCfg.AppAddr, Identity: idB}}
	traced(aCfg, "a")
	pa := startStoppable(t, aCfg)

	resp, err := http.Get("http://" + toB + "/checkout")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "b, then from c" {
		t.Fatalf("got %d %q (%s)", resp.StatusCode, body, resp.Header.Get("l5d-proxy-error"))
	}
	for _, p := range []*stoppable{pa, pb, pc} {
		p.stop(t) // exports the spans still batched
	}

	spans := rcv.Spans()
	if len(spans) != 4 {
		t.Fatalf("%d spans; want 4 (A out, B in, B out, C in): %+v", len(spans), spans)
	}
	aOut := spanOf(t, spans, "a", tracepb.Span_SPAN_KIND_CLIENT)
	bIn := spanOf(t, spans, "b", tracepb.Span_SPAN_KIND_SERVER)
	bOut := spanOf(t, spans, "b", tracepb.Span_SPAN_KIND_CLIENT)
	cIn := spanOf(t, spans, "c", tracepb.Span_SPAN_KIND_SERVER)
	for _, s := range spans {
		if s.TraceID != aOut.TraceID {
			t.Errorf("%s %v span in trace %s; want them all in %s", s.Service(), s.Kind, s.TraceID, aOut.TraceID)
		}
		if s.Name != "GET" || s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("%s %v span named %q, status %v", s.Service(), s.Kind, s.Name, s.Status)
		}
	}
	for _, link := range []struct {
		name          string
		child, parent tracetest.Span
	}{{"B in", bIn, aOut}, {"B out", bOut, bIn}, {"C in", cIn, bOut}} {
		if link.child.ParentSpanID != link.parent.SpanID {
			t.Errorf("%s span's parent is %s; want %s", link.name, link.child.ParentSpanID, link.parent.SpanID)
		}
	}
	if aOut.ParentSpanID != "" {
		t.Errorf("A's span has parent %s; the client sent no trace context", aOut.ParentSpanID)
	}
	if got, want := atB.last(t).Get("Traceparent"), "00-"+aOut.TraceID+"-"+bIn.SpanID+"-01"; got != want {
		t.Errorf("app B got traceparent %q; want B's inbound span %q", got, want)
	}
	if got, want := atC.last(t).Get("Traceparent"), "00-"+aOut.TraceID+"-"+cIn.SpanID+"-01"; got != want {
		t.Errorf("app C got traceparent %q; want C's inbound span %q", got, want)
	}

	common := map[string]any{"http.request.method": "GET", "http.response.status_code": int64(200), "network.peer.address": "127.0.0.1"}
	wantAttributes(t, aOut, common)
	wantAttributes(t, aOut, map[string]any{"trellis.direction": "outbound", "url.path": "/checkout", "trellis.client_id": idA, "trellis.server_id": idB, "server.address": "127.0.0.1", "server.port": int64(port(toB))})
	wantAttributes(t, bIn, common)
	wantAttributes(t, bIn, map[string]any{"trellis.direction": "inbound", "url.path": "/checkout", "trellis.client_id": idA, "trellis.server_id": idB})
	wantAttributes(t, bOut, common)
	wantAttributes(t, bOut, map[string]any{"trellis.direction": "outbound", "url.path": "/inventory", "trellis.client_id": idB, "trellis.server_id": idC})
	wantAttributes(t, cIn, common)
	wantAttributes(t, cIn, map[string]any{"trellis.direction": "inbound", "url.path": "/inventory", "trellis.client_id": idB, "trellis.server_id": idC})
	for _, s := range []tracetest.Span{aOut, bIn, cIn} {
		if s.Resource["trellis.identity"] == nil {
			t.Errorf("%s span's resource has no trellis.identity: %v", s.Service(), s.Resource)
		}
	}

	// B's access log has a line for each direction, with the trace id.
	lines := strings.Split(strings.TrimSpace(accessB.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("B's access log:\n%s\nwant 2 lines", accessB.String())
	}
	dirs := map[string]bool{}
	for _, line := range lines {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		dirs[l["direction"].(string)] = true
		if l["trace_id"] != aOut.TraceID {
			t.Errorf("access log line %s: trace_id %v; want %s", line, l["trace_id"], aOut.TraceID)
		}
	}
	if !dirs["inbound"] || !dirs["outbound"] {
		t.Errorf("access log directions %v; want inbound and outbound", dirs)
	}
}

// tracedInbound runs a tracing proxy (when collector is set) in front of an
// application recording what it receives.
func tracedInbound(t *testing.T, collector string) (*stoppable, *seen) {
	s := &seen{}
	cfg := proxytest.Config(t)
	cfg.AppAddr = recordingApp(t, "app", s)
	cfg.TraceCollector = collector
	return startStoppable(t, cfg), s
}

func send(t *testing.T, addr string, header map[string]string) {
	t.Helper()
	if status := testkit.Get(t, "http://"+addr+"/", "", header); status != 200 {
		t.Fatalf("status %d", status)
	}
}

func TestB3InB3AndTraceparentOut(t *testing.T) {
	rcv := tracetest.Start(t)
	p, got := tracedInbound(t, rcv.Addr())
	addr := p.InboundAddr.String()
	const trace, parent = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"

	send(t, addr, map[string]string{"B3": trace + "-" + parent + "-1"})
	h := got.last(t)
	b3 := strings.Split(h.Get("B3"), "-")
	if len(b3) != 3 || b3[0] != trace || b3[1] == parent || b3[2] != "1" {
		t.Errorf("app got b3 %q; want the trace, the proxy's span, sampled", h.Get("B3"))
	}
	if want := "00-" + trace + "-" + b3[1] + "-01"; h.Get("Traceparent") != want {
		t.Errorf("app got traceparent %q; want %q", h.Get("Traceparent"), want)
	}

	send(t, addr, map[string]string{"X-B3-TraceId": trace, "X-B3-SpanId": parent, "X-B3-Sampled": "1"})
	h = got.last(t)
	if h.Get("X-B3-TraceId") != trace || h.Get("X-B3-SpanId") == parent || h.Get("X-B3-Sampled") != "1" || h.Get("B3") != "" {
		t.Errorf("app got X-B3-* %v, b3 %q; want the trace and the proxy's span in the multi-header form only", h, h.Get("B3"))
	}
	if want := "00-" + trace + "-" + h.Get("X-B3-SpanId") + "-01"; h.Get("Traceparent") != want {
		t.Errorf("app got traceparent %q; want %q", h.Get("Traceparent"), want)
	}

	p.stop(t)
	spans := rcv.Spans()
	if len(spans) != 2 {
		t.Fatalf("%d spans; want 2", len(spans))
	}
	for _, s := range spans {
		if s.TraceID != trace || s.ParentSpanID != parent {
			t.Errorf("span in trace %s with parent %s; want the B3 parent", s.TraceID, s.ParentSpanID)
		}
	}
}

func TestNoTracingAddsNoHeaders(t *testing.T) {
	p, got := tracedInbound(t, "")
	addr := p.InboundAddr.String()
	send(t, addr, nil)
	for _, k := range []string{"Traceparent", "Tracestate", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Sampled"} {
		if v := got.last(t).Get(k); v != "" {
			t.Errorf("a proxy without tracing added %s: %q", k, v)
		}
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send(t, addr, map[string]string{"Traceparent": tp})
	if v := got.last(t).Get("Traceparent"); v != tp {
		t.Errorf("a proxy without tracing changed traceparent to %q", v)
	}
}
