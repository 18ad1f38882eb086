package metricsapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi/embedded"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// scrapeEvery10s feeds the embedded store: six scrapes 10 s apart (in the
// past, so the TSDB takes them), with 100 calls to each web instance
// between two scrapes — 10 rps per instance. It returns the last scrape's time.
func scrapeEvery10s(t *testing.T, m *mesh, e *embedded.Store) time.Time {
	t.Helper()
	t0 := time.Now().Add(-2 * time.Minute)
	var ts time.Time
	for i := 0; i <= 6; i++ {
		ts = t0.Add(time.Duration(i) * 10 * time.Second)
		e.ScrapeAt(context.Background(), ts)
		m.traffic("web-0", 100, 10, 3*time.Millisecond)
		m.traffic("web-1", 100, 0, 30*time.Millisecond)
	}
	return ts
}

func openEmbedded(t *testing.T, m *mesh) *embedded.Store {
	t.Helper()
	e, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Interval: time.Second,
		Targets: func(ctx context.Context) ([]metricsapi.Target, error) { return metricsapi.Targets(ctx, m.store) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func near(t *testing.T, what string, got *float64, want, tolerance float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: none, want %v", what, want)
		return
	}
	if math.Abs(*got-want) > tolerance {
		t.Errorf("%s = %v, want %v ± %v", what, *got, want, tolerance)
	}
}

func TestEmbeddedStat(t *testing.T) {
	m := newMesh(t)
	e := openEmbedded(t, m)
	at := scrapeEvery10s(t, m, e)
	api := &metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }}
	ctx := context.Background()

	rows, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "workload", Namespace: "default", Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]metricsapi.StatRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	if len(rows) != 3 {
		t.Fatalf("rows %+v, want traffic, voting and web", rows)
	}
	web := byName["web"]
	if web.Meshed != 2 || web.Instances != 2 {
		t.Errorf("web meshed %d/%d, want 2/2", web.Meshed, web.Instances)
	}
	rps := web.RPS
	near(t, "web rps", &rps, 20, 0.01)
	near(t, "web success", web.Success, 0.95, 0.0001)
	// Half the responses took 3 ms (bucket 2–3 ms), half 30 ms (20–30 ms):
	// histogram_quantile interpolates within those buckets.
	near(t, "web p50", web.LatencyP50, 3, 0.01)
	near(t, "web p95", web.LatencyP95, 29, 0.01)
	near(t, "web p99", web.LatencyP99, 29.8, 0.01)
	if tr := byName["traffic"]; tr.Success != nil || tr.RPS != 0 || tr.Instances != 1 {
		t.Errorf("traffic (receives nothing) = %+v, want no traffic and 1 instance", tr)
	}

	one, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "workload", Name: "web", Namespace: "default", Window: time.Minute})
	if err != nil || len(one) != 1 || one[0].Name != "web" {
		t.Fatalf("stat workload web = %+v, %v", one, err)
	}
	from, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "service", Namespace: "default", From: &metricsapi.Ref{Kind: "workload", Name: "traffic"}, Window: time.Minute})
	if err != nil || len(from) != 1 || from[0].Name != "web" {
		t.Fatalf("stat svc --from workload/traffic = %+v, %v", from, err)
	}
	rps = from[0].RPS
	near(t, "traffic→web rps", &rps, 20, 0.01)
	to, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "workload", Namespace: "default", To: &metricsapi.Ref{Kind: "service", Name: "web"}, Window: time.Minute})
	if err != nil || len(to) != 1 || to[0].Name != "traffic" {
		t.Fatalf("stat wl --to svc/web = %+v, %v", to, err)
	}
	ns, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "namespace", Window: time.Minute})
	if err != nil || len(ns) != 1 || ns[0].Name != "default" || ns[0].Instances != 4 {
		t.Fatalf("stat ns = %+v, %v", ns, err)
	}

	// An instance that leaves: its series go stale, it no longer counts.
	m.remove(t, "web-1")
	next := at.Add(10 * time.Second)
	e.ScrapeAt(ctx, next)
	api.Now = func() time.Time { return next.Add(time.Second) }
	after, err := api.Stat(ctx, metricsapi.StatRequest{Kind: "workload", Name: "web", Namespace: "default", Window: 15 * time.Second})
	if err != nil || len(after) != 1 {
		t.Fatalf("stat after web-1 left = %+v, %v", after, err)
	}
	if after[0].Instances != 1 {
		t.Errorf("web instances after web-1 left = %d, want 1", after[0].Instances)
	}
	rps = after[0].RPS
	near(t, "web rps with web-0 alone", &rps, 10, 0.01)
}

func TestEmbeddedEdgesAndRoutes(t *testing.T) {
	m := newMesh(t)
	e := openEmbedded(t, m)
	at := scrapeEvery10s(t, m, e)
	api := &metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }}
	ctx := context.Background()

	edges, err := api.Edges(ctx, metricsapi.EdgesRequest{Namespace: "default", Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := metricsapi.Edge{Src: "traffic", SrcNamespace: "default", Dst: "web", DstNamespace: "default", Secured: true, ClientID: trafficID, ServerID: webID}
	if len(edges) != 1 {
		t.Fatalf("edges = %+v, want [%+v]", edges, want)
	}
	gold := edges[0].Golden
	if edges[0].Golden = (metricsapi.Golden{}); edges[0] != want {
		t.Fatalf("edges = %+v, want [%+v]", edges, want)
	}
	near(t, "edge success", gold.Success, 0.95, 0.01)
	near(t, "edge rps", &gold.RPS, 20, 0.5)

	routes, err := api.Routes(ctx, metricsapi.RoutesRequest{Service: "web", Namespace: "default", Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Route != metricsapi.DefaultRoute {
		t.Fatalf("routes = %+v, want the default route", routes)
	}
	r := routes[0]
	rps := r.RPS
	near(t, "route rps", &rps, 20, 0.01)
	near(t, "route success", r.Success, 0.95, 0.0001)
	retries := r.RetriesPerSec
	near(t, "route retries/s", &retries, 1, 0.01)
}

func TestHandler(t *testing.T) {
	m := newMesh(t)
	e := openEmbedded(t, m)
	at := scrapeEvery10s(t, m, e)
	srv := httptest.NewServer((&metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }}).Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/v1/stat?kind=svc&namespace=default&window=1m")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Rows []metricsapi.StatRow `json:"rows"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stat: %s %v", resp.Status, err)
	}
	resp.Body.Close()
	if len(res.Rows) != 3 || res.Rows[2].Name != "web" || res.Rows[2].Kind != "service" {
		t.Fatalf("stat svc rows = %+v", res.Rows)
	}

	for path, wantErr := range map[string]string{
		"/v1/stat?kind=pods":             "unknown resource kind",
		"/v1/stat?window=soon":           "window",
		"/v1/stat?window=0s":             "between 1s and 24h",
		"/v1/stat?from=wl/a&to=wl/b":     "cannot be used together",
		"/v1/stat?name=%ff":              "not valid UTF-8",
		"/v1/stat?from=bogus/x":          "from: unknown resource kind",
		"/v1/routes":                     "service: required",
		"/v1/edges?window=48h":           "between 1s and 24h",
		"/v1/proxy-metrics/default/nope": "not registered",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode < 400 || !strings.Contains(e.Error, wantErr) {
			t.Errorf("GET %s = %d %q, want an error containing %q", path, resp.StatusCode, e.Error, wantErr)
		}
	}

	// Windows must hold two scrapes.
	strict := httptest.NewServer((&metricsapi.API{Backend: e, Store: m.store, ScrapeInterval: 10 * time.Second}).Handler())
	defer strict.Close()
	resp, err = http.Get(strict.URL + "/v1/stat?window=15s")
	if err != nil {
		t.Fatal(err)
	}
	var short struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&short)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(short.Error, "two scrape intervals (20s)") {
		t.Errorf("a 15s window with 10s scrapes = %d %q, want a 400 naming the minimum", resp.StatusCode, short.Error)
	}

	resp, err = http.Get(srv.URL + "/v1/proxy-metrics/default/web-0")
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(body.String(), `request_total{direction="inbound"`) {
		t.Errorf("proxy-metrics of web-0 lacks its inbound requests:\n%s", body)
	}
}

// Servers' rows count what their proxies' authorization policies allowed
// and denied; a workload's UNAUTHORIZED what its proxies denied.
func TestEmbeddedStatServers(t *testing.T) {
	m := newMesh(t)
	e := openEmbedded(t, m)
	if _, err := m.store.Apply(context.Background(), store.Resource{APIVersion: resources.PolicyAPIVersion, Kind: resources.KindServer,
		Metadata: store.Metadata{Name: "web-http", Namespace: "default"},
		Spec:     []byte(`{"podSelector": {"matchLabels": {"trellis.dev/workload": "web"}}, "port": 8080}`)}); err != nil {
		t.Fatal(err)
	}
	// Each web instance: 4 requests and 1 connection allowed a second, 1 request denied.
	srv := []string{"srv_group", "policy.trellis.dev", "srv_kind", "server", "srv_name", "web-http", "srv_port", "8080"}
	authz := append(slices.Clone(srv), "authz_group", "policy.trellis.dev", "authz_kind", "authorizationpolicy", "authz_name", "web-from-traffic")
	type counter struct {
		perScrape uint64
		c         *atomic.Uint64
	}
	var counters []counter
	for _, web := range []string{"web-0", "web-1"} {
		reg := m.proxies[web].reg
		counters = append(counters, counter{40, reg.Counters("inbound_http_authz_allow_total", "").With(authz...)},
			counter{10, reg.Counters("inbound_tcp_authz_allow_total", "").With(authz...)},
			counter{10, reg.Counters("inbound_http_authz_deny_total", "").With(srv...)})
	}
	t0 := time.Now().Add(-2 * time.Minute)
	var at time.Time
	for i := 0; i <= 6; i++ {
		at = t0.Add(time.Duration(i) * 10 * time.Second)
		e.ScrapeAt(context.Background(), at)
		for _, c := range counters {
			c.c.Add(c.perScrape)
		}
	}
	api := &metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }}
	rows, err := api.Stat(context.Background(), metricsapi.StatRequest{Kind: metricsapi.KindServer, Namespace: "default", Window: time.Minute})
	if err != nil || len(rows) != 1 || rows[0].Name != "web-http" {
		t.Fatalf("stat srv = %+v, %v; want web-http", rows, err)
	}
	if r := rows[0]; r.Instances != 2 || math.Abs(r.RPS-10) > 0.01 || math.Abs(r.UnauthorizedPerSec-2) > 0.01 {
		t.Errorf("web-http: %d instances, %v rps allowed, %v denied; want 2, 10 and 2", r.Instances, r.RPS, r.UnauthorizedPerSec)
	}
	wl, err := api.Stat(context.Background(), metricsapi.StatRequest{Kind: "workload", Name: "web", Namespace: "default", Window: time.Minute})
	if err != nil || len(wl) != 1 || math.Abs(wl[0].UnauthorizedPerSec-2) > 0.01 {
		t.Errorf("stat wl web = %+v, %v; want 2 unauthorized a second", wl, err)
	}
	if _, err := api.Stat(context.Background(), metricsapi.StatRequest{Kind: metricsapi.KindServer, From: &metricsapi.Ref{Kind: "workload", Name: "traffic"}, Window: time.Minute}); err == nil {
		t.Error("stat srv --from: no error")
	}
	decisions, err := api.Authz(context.Background(), metricsapi.AuthzRequest{Workload: "web", Window: time.Minute})
	want := []metricsapi.AuthzRow{
		{ServerKind: "server", Server: "web-http", AuthzKind: "authorizationpolicy", Authz: "web-from-traffic", PerSec: 10},
		{ServerKind: "server", Server: "web-http", Denied: true, PerSec: 2},
	}
	if err != nil || len(decisions) != len(want) {
		t.Fatalf("authz web = %+v, %v; want %+v", decisions, err, want)
	}
	for i := range want {
		got := decisions[i]
		if math.Abs(got.PerSec-want[i].PerSec) > 0.01 {
			t.Errorf("authz web row %d: %v a second, want %v", i, got.PerSec, want[i].PerSec)
		}
		if got.PerSec = want[i].PerSec; got != want[i] {
			t.Errorf("authz web row %d = %+v, want %+v", i, got, want[i])
		}
	}
}

func TestEmbeddedSeries(t *testing.T) {
	m := newMesh(t)
	e := openEmbedded(t, m)
	at := scrapeEvery10s(t, m, e)
	api := &metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }, ScrapeInterval: time.Second}
	ctx := context.Background()
	// Six scrapes, 10 s apart: rates over 20 s exist from the third on.
	reply, err := api.Series(ctx, metricsapi.SeriesRequest{StatRequest: metricsapi.StatRequest{Kind: "workload", Name: "web", Namespace: "default", Window: 20 * time.Second},
		Points: 6, Step: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Times) != 6 || reply.Times[5] != at.UnixMilli() || reply.Times[5]-reply.Times[4] != 10_000 {
		t.Fatalf("times %v, want 6 ending at %d, 10 s apart", reply.Times, at.UnixMilli())
	}
	if len(reply.Series) != 1 || reply.Series[0].Name != "web" {
		t.Fatalf("series %+v, want web's", reply.Series)
	}
	web := reply.Series[0]
	for i := 2; i < 6; i++ {
		near(t, fmt.Sprintf("web rps at point %d", i), web.RPS[i], 20, 0.5)
		near(t, fmt.Sprintf("web success at point %d", i), web.Success[i], 0.95, 0.01)
	}
	if web.Success[0] != nil {
		t.Errorf("web success before any traffic: %v, want none", *web.Success[0])
	}
	for _, bad := range []metricsapi.SeriesRequest{{Points: 1, Step: 10 * time.Second}, {Points: 61, Step: 10 * time.Second}, {Points: 10, Step: time.Millisecond}} {
		bad.StatRequest = metricsapi.StatRequest{Kind: "workload", Window: time.Minute}
		if _, err := api.Series(ctx, bad); err == nil {
			t.Errorf("series of %d points %v apart: no error", bad.Points, bad.Step)
		}
	}
}

func TestEmbeddedCertificates(t *testing.T) {
	m := newMesh(t)
	expires := time.Now().Add(20 * time.Hour).Truncate(time.Second).UTC()
	m.proxies["web-0"].reg.Gauge("identity_cert_expiration_timestamp_seconds", "expiry", func() float64 { return float64(expires.Unix()) })
	m.proxies["web-1"].reg.Gauge("identity_cert_expiration_timestamp_seconds", "expiry", func() float64 { return 0 }) // none yet
	e := openEmbedded(t, m)
	at := scrapeEvery10s(t, m, e)
	api := &metricsapi.API{Backend: e, Store: m.store, Now: func() time.Time { return at }}
	certs, err := api.Certificates(context.Background(), "default")
	if err != nil {
		t.Fatal(err)
	}
	want := []metricsapi.Certificate{{Namespace: "default", Instance: "web-0", Expires: expires}}
	if !slices.Equal(certs, want) {
		t.Errorf("certificates %+v, want %+v", certs, want)
	}
}
