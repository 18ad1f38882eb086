package tap_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/control/tap"
	proxytap "github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/tap/taptest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// proxy is a real tap server in front of a hub that an HTTP server reports to.
type proxy struct {
	hub    *proxytap.Hub
	target tap.Target
	front  string // URL of the tapped HTTP server
}

func startProxy(t *testing.T, p *taptest.PKI, workload string) *proxy {
	t.Helper()
	id := taptest.ID(t, "default", workload)
	hub := proxytap.NewHub(proxytap.HubConfig{Identity: id.String()})
	front := httptest.NewServer(proxytap.Layer(hub, "inbound")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	t.Cleanup(front.Close)
	addr := taptest.StartServer(t, p, hub, id, taptest.ControlPlane)
	return &proxy{hub: hub, front: front.URL, target: tap.Target{Addr: addr, Workload: workload, Namespace: "default", Identity: id.String()}}
}

func client(t *testing.T, p *taptest.PKI) *tap.Client {
	t.Helper()
	cert := p.Cert(t, taptest.ControlPlane)
	return &tap.Client{
		Roots:                p.Anchors(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
	}
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestObserveMergesProxies(t *testing.T) {
	p := taptest.NewPKI(t)
	web, api := startProxy(t, p, "web"), startProxy(t, p, "api")
	impostor := startProxy(t, p, "impostor")
	expected := taptest.ID(t, "default", "payments")
	targets := []tap.Target{
		web.target,
		api.target,
		{Addr: deadAddr(t), Workload: "gone", Namespace: "default", Identity: taptest.ID(t, "default", "gone").String()},
		{Addr: impostor.target.Addr, Workload: "payments", Namespace: "default", Identity: expected.String()},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := client(t, p).Observe(ctx, targets, &tapv1.ObserveRequest{PathPrefix: "/tapped"})
	testkit.WaitFor(t, "both proxies to be tapped", func() bool { return web.hub.Active() && api.hub.Active() })
	get(t, web.front+"/tapped/web")
	get(t, web.front+"/other")
	get(t, api.front+"/tapped/api")

	byWorkload := map[string][]tap.Event{}
	for n := 0; n < 3+3+1+1; n++ {
		select {
		case e := <-events:
			byWorkload[e.Workload] = append(byWorkload[e.Workload], e)
		case <-ctx.Done():
			t.Fatalf("events so far: %+v", byWorkload)
		}
	}
	for _, w := range []string{"web", "api"} {
		evs := byWorkload[w]
		if len(evs) != 3 {
			t.Fatalf("%s: %d events: %+v", w, len(evs), evs)
		}
		ri, rsp, end := evs[0], evs[1], evs[2]
		if ri.Type != tap.TypeRequestInit || rsp.Type != tap.TypeResponseInit || end.Type != tap.TypeResponseEnd {
			t.Fatalf("%s: types %s %s %s", w, ri.Type, rsp.Type, end.Type)
		}
		for _, e := range evs {
			if e.ID != ri.ID || e.Namespace != "default" || e.Proxy != "inbound" || e.ProxyAddr == "" || e.Source == "" {
				t.Errorf("%s: %+v", w, e)
			}
		}
		if ri.Method != "GET" || ri.Path != "/tapped/"+w || ri.Scheme != "http" || !strings.HasPrefix(ri.Authority, "127.0.0.1:") {
			t.Errorf("%s: request %+v", w, ri)
		}
		if rsp.Status != 200 || rsp.LatencyMicros <= 0 || rsp.Time.Before(ri.Time) {
			t.Errorf("%s: response %+v after request at %v", w, rsp, ri.Time)
		}
		if end.Bytes != 2 || end.GRPCStatus != nil || end.Error != "" || end.DurationMicros < rsp.LatencyMicros || end.Time.Before(rsp.Time) {
			t.Errorf("%s: end %+v", w, end)
		}
	}
	if evs := byWorkload["gone"]; len(evs) != 1 || evs[0].Type != tap.TypeError || !strings.Contains(evs[0].Error, "Unavailable") {
		t.Errorf("dead proxy: %+v", evs)
	}
	if evs := byWorkload["payments"]; len(evs) != 1 || evs[0].Type != tap.TypeError || !strings.Contains(evs[0].Error, "not "+expected.String()) {
		t.Errorf("proxy with another identity: %+v", evs)
	}
	if impostor.hub.Active() {
		t.Error("the control plane tapped a proxy that is not who it should be")
	}

	cancel()
	for range events { // closed once every stream has stopped
	}
	testkit.WaitFor(t, "the proxies' streams to end", func() bool { return !web.hub.Active() && !api.hub.Active() })
}

func TestEventJSON(t *testing.T) {
	zero := 0
	for _, tc := range []struct {
		e    tap.Event
		want []string
	}{
		{tap.Event{Type: tap.TypeRequestInit, ID: 1, ProxyAddr: "10.0.0.1:4190", Workload: "web", Namespace: "default", Proxy: "inbound",
			Source: "10.0.0.2:1234", Destination: "127.0.0.1:8080", TLS: true, ClientID: "c", ServerID: "s", Route: "default/r",
			Method: "GET", Scheme: "http", Authority: "web", Path: "/"},
			[]string{"type", "time", "id", "proxyAddr", "workload", "namespace", "proxy", "source", "destination", "tls", "clientId", "serverId", "route", "method", "scheme", "authority", "path"}},
		{tap.Event{Type: tap.TypeResponseInit, Status: 200, LatencyMicros: 5}, []string{"status", "latencyMicros"}},
		{tap.Event{Type: tap.TypeResponseEnd, GRPCStatus: &zero, DurationMicros: 7, Bytes: 3, Error: "x"}, []string{"grpcStatus", "durationMicros", "bytes", "error"}},
	} {
		b, err := json.Marshal(tc.e)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range tc.want {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %s", tc.e.Type, k, b)
			}
		}
		if tc.e.Type == tap.TypeResponseEnd && m["grpcStatus"] != 0.0 {
			t.Errorf("grpc status OK is left out: %s", b)
		}
	}
}

func TestHandler(t *testing.T) {
	p := taptest.NewPKI(t)
	web := startProxy(t, p, "web")
	var mu sync.Mutex
	var asked *tapv1.ObserveRequest
	h := tap.Handler(client(t, p), func(r *http.Request) ([]tap.Target, *tapv1.ObserveRequest, error) {
		req, err := tap.ParseQuery(r.URL.Query())
		if err != nil {
			return nil, nil, err
		}
		mu.Lock()
		asked = req
		mu.Unlock()
		if r.URL.Query().Get("workload") == "none" {
			return nil, req, nil
		}
		return []tap.Target{web.target}, req, nil
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		query string
		code  int
	}{
		{"direction=up", http.StatusBadRequest},
		{"max_rps=lots", http.StatusBadRequest},
		{"workload=none", http.StatusNotFound},
	} {
		resp, err := http.Get(srv.URL + "?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.query, resp.StatusCode, b, tc.code)
		}
	}

	q := url.Values{"method": {"GET"}, "path": {"/a"}, "authority": {"x"}, "to": {"y"}, "direction": {"inbound"}, "max_rps": {"5"}}
	resp, err := http.Get(srv.URL + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/x-ndjson" {
		t.Fatalf("%d %s", resp.StatusCode, ct)
	}
	mu.Lock()
	got := asked
	mu.Unlock()
	if got.GetMethod() != "GET" || got.GetPathPrefix() != "/a" || got.GetAuthority() != "x" || got.GetTo() != "y" || got.GetDirection() != "inbound" || got.GetMaxRps() != 5 {
		t.Errorf("query read as %v", got)
	}
	// The handler answers before it taps: the proxy's subscription must
	// exist before the stream ends, or it could outlive this check.
	testkit.WaitFor(t, "the proxy to be tapped", web.hub.Active)
	resp.Body.Close()
	testkit.WaitFor(t, "the stream to end with the client", func() bool { return !web.hub.Active() })

	resp, err = http.Get(srv.URL + "?path=/a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	testkit.WaitFor(t, "the proxy to be tapped", web.hub.Active)
	get(t, web.front+"/b")
	get(t, web.front+"/a")
	// Events that never come fail the test rather than hang it.
	watchdog := time.AfterFunc(10*time.Second, func() { resp.Body.Close() })
	defer watchdog.Stop()
	lines := bufio.NewScanner(resp.Body)
	var types []string
	for len(types) < 3 && lines.Scan() {
		var e tap.Event
		if err := json.Unmarshal(lines.Bytes(), &e); err != nil {
			t.Fatalf("%q: %v", lines.Text(), err)
		}
		if e.Workload != "web" || (e.Type == tap.TypeRequestInit && e.Path != "/a") {
			t.Errorf("unexpected event %s", lines.Text())
		}
		types = append(types, e.Type)
	}
	if strings.Join(types, " ") != "requestInit responseInit responseEnd" {
		t.Errorf("events %v (%v)", types, lines.Err())
	}
	resp.Body.Close()
	testkit.WaitFor(t, "the stream to end with the client", func() bool { return !web.hub.Active() })
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"", true},
		{"direction=outbound&max_rps=0", true},
		{"direction=Inbound", false},
		{"max_rps=-1", false},
		{"max_rps=99999999999", false},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, err := tap.ParseQuery(q)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.query, err)
		}
	}
}

func TestObserveLeavesNoGoroutines(t *testing.T) {
	p := taptest.NewPKI(t)
	web, api := startProxy(t, p, "web"), startProxy(t, p, "api")
	dead := tap.Target{Addr: deadAddr(t), Workload: "gone", Namespace: "default", Identity: taptest.ID(t, "default", "gone").String()}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	events := client(t, p).Observe(ctx, []tap.Target{web.target, api.target, dead}, &tapv1.ObserveRequest{})
	testkit.WaitFor(t, "both proxies to be tapped", func() bool { return web.hub.Active() && api.hub.Active() })
	if e := <-events; e.Type != tap.TypeError || e.Workload != "gone" {
		t.Fatalf("first event %+v, want the dead proxy's error", e)
	}
	cancel()
	for range events {
	}
	testkit.WaitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if web.hub.Active() || api.hub.Active() {
		t.Error("streams outlived the context")
	}
}
