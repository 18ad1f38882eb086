package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/tap"
)

// Golden-file tests of the observability tables (stat, routes, edges, top,
// tap) and the stable-schema test of their -o json output.
//
// After an intended change of a table, regenerate the files with
//
//	go test ./internal/cli/ -run 'Golden' -update
//
// and review the diff of internal/cli/testdata before committing it.

var updateGolden = flag.Bool("update", false, "rewrite internal/cli/testdata/*.golden with the tests' output")

// checkGolden compares got with testdata/name.golden, or rewrites the file
// with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/cli/ -run '%s' -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (- want, + got; -update rewrites the file):\n%s\nwant:\n%s\ngot:\n%s",
			path, lineDiff(string(want), got), want, got)
	}
}

// lineDiff is a line diff of want and got: "  " common, "- " only in want,
// "+ " only in got (longest common subsequence; tables are small).
func lineDiff(want, got string) string {
	a, b := strings.SplitAfter(want, "\n"), strings.SplitAfter(got, "\n")
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	line := func(prefix, s string) {
		if s == "" {
			return
		}
		s = strings.TrimSuffix(s, "\n")
		fmt.Fprintf(&sb, "%s%q\n", prefix, s) // quoted: shows trailing spaces
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			line("  ", a[i])
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			line("- ", a[i])
			i++
		default:
			line("+ ", b[j])
			j++
		}
	}
	for ; i < len(a); i++ {
		line("- ", a[i])
	}
	for ; j < len(b); j++ {
		line("+ ", b[j])
	}
	return sb.String()
}

func f64(v float64) *float64 { return &v }

func intPtr(v int) *int { return &v }

// Fixtures: realistic rows as the metrics API returns them.

func statWorkloads() []metricsapi.StatRow {
	return []metricsapi.StatRow{
		{
			Namespace: "default", Kind: "workload", Name: "traffic", Meshed: 1, Instances: 1,
			Golden:          metricsapi.Golden{Success: f64(1), RPS: 2, LatencyP50: f64(0.8), LatencyP95: f64(4.75), LatencyP99: f64(9.5)},
			ReadBytesPerSec: 512, WriteBytesPerSec: 300.25,
		},
		{
			Namespace: "default", Kind: "workload", Name: "voting", Meshed: 1, Instances: 2,
			Golden:             metricsapi.Golden{Success: f64(0.8125), RPS: 0.4, LatencyP50: f64(12.4), LatencyP95: f64(95), LatencyP99: f64(1234.6)},
			UnauthorizedPerSec: 0.25, TCPConnections: 1, ReadBytesPerSec: 2048, WriteBytesPerSec: 3.5 * (1 << 20),
		},
		{
			Namespace: "default", Kind: "workload", Name: "web", Meshed: 3, Instances: 3,
			Golden:         metricsapi.Golden{Success: f64(0.98765), RPS: 12.3456, LatencyP50: f64(3.2), LatencyP95: f64(47.8), LatencyP99: f64(96.4)},
			TCPConnections: 12, ReadBytesPerSec: 1536, WriteBytesPerSec: 18.4 * (1 << 10),
		},
		// Registered, but no traffic in the window.
		{Namespace: "default", Kind: "workload", Name: "worker", Meshed: 0, Instances: 1},
	}
}

func statAllNamespaces() []metricsapi.StatRow {
	return append(statWorkloads(),
		metricsapi.StatRow{
			Namespace: "emojivoto", Kind: "workload", Name: "emoji", Meshed: 1, Instances: 1,
			Golden:         metricsapi.Golden{Success: f64(1), RPS: 5.5, LatencyP50: f64(1), LatencyP95: f64(1.9), LatencyP99: f64(2)},
			TCPConnections: 2, ReadBytesPerSec: 100, WriteBytesPerSec: 0,
		},
		metricsapi.StatRow{Namespace: "trellis-system", Kind: "workload", Name: "prometheus", Meshed: 0, Instances: 1},
	)
}

func statNamespaces() []metricsapi.StatRow {
	return []metricsapi.StatRow{
		{
			Namespace: "default", Kind: "namespace", Name: "default", Meshed: 5, Instances: 7,
			Golden:         metricsapi.Golden{Success: f64(0.975), RPS: 14.75, LatencyP50: f64(2.5), LatencyP95: f64(40), LatencyP99: f64(99)},
			TCPConnections: 13, ReadBytesPerSec: 4096, WriteBytesPerSec: 2 * (1 << 20),
		},
		{
			Namespace: "emojivoto", Kind: "namespace", Name: "emojivoto", Meshed: 1, Instances: 1,
			Golden:         metricsapi.Golden{Success: f64(1), RPS: 5.5, LatencyP50: f64(1), LatencyP95: f64(1.9), LatencyP99: f64(2)},
			TCPConnections: 2, ReadBytesPerSec: 100,
		},
		{Namespace: "trellis-system", Kind: "namespace", Name: "trellis-system", Meshed: 0, Instances: 1},
	}
}

func routeRows() []metricsapi.RouteRow {
	return []metricsapi.RouteRow{
		{
			Route: "default/web-api", Kind: "HTTPRoute", Service: "web",
			Golden:        metricsapi.Golden{Success: f64(0.995), RPS: 10, LatencyP50: f64(2.5), LatencyP95: f64(20), LatencyP99: f64(48.2)},
			RetriesPerSec: 0.5, TimeoutsPerSec: 0.1,
		},
		// Attached, but no traffic in the window.
		{Route: "default/web-grpc", Kind: "GRPCRoute", Service: "web"},
		{
			Route: "default/web-static", Kind: "HTTPRoute", Service: "web",
			Golden: metricsapi.Golden{Success: f64(1), RPS: 0.25, LatencyP50: f64(0.5), LatencyP95: f64(0.9), LatencyP99: f64(1)},
		},
		{
			Route: metricsapi.DefaultRoute, Service: "web",
			Golden:        metricsapi.Golden{Success: f64(0.5), RPS: 2, LatencyP50: f64(9.96), LatencyP95: f64(15), LatencyP99: f64(30)},
			RetriesPerSec: 2, TimeoutsPerSec: 1,
		},
	}
}

func edgeRows() []metricsapi.Edge {
	return []metricsapi.Edge{
		{
			Src: "traffic", SrcNamespace: "default", Dst: "web", DstNamespace: "default", Secured: true,
			ClientID: "spiffe://cluster.local/ns/default/sa/traffic", ServerID: "spiffe://cluster.local/ns/default/sa/web",
		},
		{
			Src: "web", SrcNamespace: "default", Dst: "voting", DstNamespace: "emojivoto", Secured: true,
			ClientID: "spiffe://cluster.local/ns/default/sa/web", ServerID: "spiffe://cluster.local/ns/emojivoto/sa/voting",
		},
		// Unsecured: the destination saw no identity.
		{
			Src: "prometheus", SrcNamespace: "trellis-system", Dst: "web", DstNamespace: "default",
			NoTLSReason: "no_tls_from_remote",
		},
		// Unsecured without a reason, but the source verified the server.
		{
			Src: "legacy", SrcNamespace: "default", Dst: "worker", DstNamespace: "default",
			ServerID: "spiffe://cluster.local/ns/default/sa/worker",
		},
	}
}

func TestStatGolden(t *testing.T) {
	for _, tc := range []struct {
		name             string
		rows             []metricsapi.StatRow
		namespaces, wide bool
	}{
		{"stat_workloads", statWorkloads(), false, false},
		{"stat_workloads_wide", statWorkloads(), false, true},
		{"stat_all_namespaces", statAllNamespaces(), true, false},
		{"stat_all_namespaces_wide", statAllNamespaces(), true, true},
		{"stat_namespace_kind", statNamespaces(), false, false},
		// -A with KIND namespace: the name is the namespace; no NAMESPACE column.
		{"stat_namespace_kind_all_wide", statNamespaces(), true, true},
		{"stat_no_traffic_row", statWorkloads()[3:], false, false},
		{"stat_empty", nil, true, true},
		// Servers: what their policies allowed and denied, per second.
		{"stat_servers", []metricsapi.StatRow{
			{Namespace: "default", Kind: "server", Name: "emoji-grpc", Instances: 2, Golden: metricsapi.Golden{RPS: 9.5}, UnauthorizedPerSec: 0.5},
			{Namespace: "default", Kind: "server", Name: "idle", Instances: 0},
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printStat(&b, tc.rows, tc.namespaces, tc.wide)
			checkGolden(t, tc.name, b.String())
		})
	}
}

func TestRoutesGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []metricsapi.RouteRow
		wide bool
	}{
		{"routes", routeRows(), false},
		{"routes_wide", routeRows(), true},
		// A service without attached routes or traffic: only the default route.
		{"routes_default_only", []metricsapi.RouteRow{{Route: metricsapi.DefaultRoute, Service: "worker"}}, true},
		{"routes_empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printRoutes(&b, tc.rows, tc.wide)
			checkGolden(t, tc.name, b.String())
		})
	}
}

func TestEdgesGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []metricsapi.Edge
		wide bool
	}{
		{"edges", edgeRows(), false},
		{"edges_wide", edgeRows(), true},
		{"edges_empty", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printEdges(&b, tc.rows, tc.wide)
			checkGolden(t, tc.name, b.String())
		})
	}
}

// Tap fixtures: two proxies of workload web (inbound and outbound).
const (
	webProxy0 = "10.42.0.11:4191"
	webProxy1 = "10.42.0.12:4191"
	trafficID = "spiffe://cluster.local/ns/default/sa/traffic"
	webID     = "spiffe://cluster.local/ns/default/sa/web"
	votingID  = "spiffe://cluster.local/ns/emojivoto/sa/voting"
)

var tapEpoch = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// inReq is a request web's proxy at addr received from traffic.
func inReq(addr string, id uint64, method, path string) tap.Event {
	return tap.Event{
		Type: tap.TypeRequestInit, Time: tapEpoch, ID: id, ProxyAddr: addr, Workload: "web", Namespace: "default",
		Proxy: "inbound", Source: "10.42.0.7:50312", Destination: "10.42.0.11:8080", TLS: true,
		ClientID: trafficID, ServerID: webID, Route: "default/web-api",
		Method: method, Scheme: "http", Authority: "web.default.svc.cluster.local:8080", Path: path,
	}
}

// outReq is a gRPC request web's proxy at addr sent to voting.
func outReq(addr string, id uint64, path string) tap.Event {
	return tap.Event{
		Type: tap.TypeRequestInit, Time: tapEpoch, ID: id, ProxyAddr: addr, Workload: "web", Namespace: "default",
		Proxy: "outbound", Source: "10.42.0.11:39100", Destination: "10.42.1.4:8080", TLS: true,
		ClientID: webID, ServerID: votingID,
		Method: "POST", Scheme: "http", Authority: "voting.emojivoto.svc.cluster.local:8080", Path: path,
	}
}

func rspInit(req tap.Event, status int, latency time.Duration) tap.Event {
	ev := req
	ev.Type, ev.Method, ev.Scheme, ev.Authority, ev.Path = tap.TypeResponseInit, "", "", "", ""
	ev.Status, ev.LatencyMicros = status, latency.Microseconds()
	ev.Time = req.Time.Add(latency)
	return ev
}

func rspEnd(req tap.Event, grpc *int, d time.Duration, bytes uint64, err string) tap.Event {
	ev := req
	ev.Type, ev.Method, ev.Scheme, ev.Authority, ev.Path = tap.TypeResponseEnd, "", "", "", ""
	ev.GRPCStatus, ev.DurationMicros, ev.Bytes, ev.Error = grpc, d.Microseconds(), bytes, err
	ev.Time = req.Time.Add(d)
	return ev
}

// topEvents is a tap stream of two proxies, interleaved as it arrives.
func topEvents() []tap.Event {
	items1 := inReq(webProxy0, 1, "GET", "/api/items")
	items2 := inReq(webProxy0, 2, "GET", "/api/items")
	items3 := inReq(webProxy0, 3, "GET", "/api/items")
	// Same id as items1, on the other proxy: a different request.
	items1b := inReq(webProxy1, 1, "GET", "/api/items")
	vote1 := outReq(webProxy0, 4, "/emojivoto.v1.VotingService/VoteDoughnut")
	vote2 := outReq(webProxy0, 5, "/emojivoto.v1.VotingService/VoteDoughnut")
	health := inReq(webProxy1, 2, "GET", "/healthz")
	health.Source, health.ClientID, health.TLS = "10.42.0.1:41000", "", false // the kubelet: no identity
	reset := inReq(webProxy1, 3, "POST", "/api/vote")
	slow := inReq(webProxy0, 6, "GET", "/api/slow") // its responseEnd never arrives

	return []tap.Event{
		items1, items2,
		rspInit(items1, 200, 1500*time.Microsecond),
		vote1,
		rspInit(items2, 200, 850*time.Microsecond),
		rspEnd(items1, nil, 1600*time.Microsecond, 512, ""),
		items1b,
		rspEnd(items2, nil, 900*time.Microsecond, 512, ""),
		rspInit(vote1, 200, 2100*time.Microsecond),
		rspEnd(vote1, intPtr(14), 2200*time.Microsecond, 0, ""), // UNAVAILABLE
		items3, slow,
		rspInit(items1b, 200, 4*time.Millisecond),
		rspInit(items3, 500, 12300*time.Microsecond),
		rspEnd(items3, nil, 12400*time.Microsecond, 21, ""),
		rspEnd(items1b, nil, 4100*time.Microsecond, 512, ""),
		vote2,
		rspInit(vote2, 200, 1800*time.Microsecond),
		rspEnd(vote2, intPtr(0), 1900*time.Microsecond, 5, ""),
		health,
		rspInit(health, 200, 300*time.Microsecond),
		rspEnd(health, nil, 310*time.Microsecond, 2, ""),
		reset,
		rspInit(reset, 200, 2*time.Millisecond),
		rspEnd(reset, nil, 5*time.Millisecond, 100, "connection reset by peer"),
		rspInit(slow, 200, 30*time.Millisecond),
		// The end of a request whose start the tap missed: not counted.
		rspEnd(inReq(webProxy1, 99, "GET", "/api/items"), nil, time.Millisecond, 1, ""),
		{Type: tap.TypeDropped, Time: tapEpoch, ProxyAddr: webProxy1, Workload: "web", Namespace: "default", Dropped: 7},
		{Type: tap.TypeError, Time: tapEpoch, ProxyAddr: "10.42.0.13:4191", Workload: "web", Namespace: "default", Error: "connection refused"},
	}
}

func TestTopGolden(t *testing.T) {
	tt := newTopTable()
	for _, ev := range topEvents() {
		tt.add(ev)
	}
	// Independently of the golden file: the numbers of each row.
	type row struct {
		count, ok         int
		best, worst, last time.Duration
	}
	us := time.Microsecond
	want := map[topKey]row{
		{"traffic", "web", "GET", "/api/items"}:                               {4, 3, 850 * us, 12300 * us, 4000 * us},
		{"web", "voting", "POST", "/emojivoto.v1.VotingService/VoteDoughnut"}: {2, 1, 1800 * us, 2100 * us, 1800 * us},
		{"10.42.0.1:41000", "web", "GET", "/healthz"}:                         {1, 1, 300 * us, 300 * us, 300 * us},
		{"traffic", "web", "POST", "/api/vote"}:                               {1, 0, 2000 * us, 2000 * us, 2000 * us},
	}
	if len(tt.rows) != len(want) {
		t.Errorf("%d rows; want %d", len(tt.rows), len(want))
	}
	for k, w := range want {
		r := tt.rows[k]
		if r == nil {
			t.Errorf("no row %+v", k)
			continue
		}
		if got := (row{r.count, r.ok, r.best, r.worst, r.last}); got != w {
			t.Errorf("row %+v: %+v; want %+v", k, got, w)
		}
	}
	if len(tt.pending) != 1 {
		t.Errorf("%d requests pending; want 1 (/api/slow, without its end)", len(tt.pending))
	}

	var b bytes.Buffer
	tt.print(&b, 30)
	checkGolden(t, "top", b.String())

	b.Reset()
	tt.print(&b, 2) // only the two most frequent
	checkGolden(t, "top_limit", b.String())

	b.Reset()
	newTopTable().print(&b, 30)
	checkGolden(t, "top_empty", b.String())
}

func tapLineEvents() []tap.Event {
	items := inReq(webProxy0, 1, "GET", "/api/items")
	vote := outReq(webProxy0, 4, "/emojivoto.v1.VotingService/VoteDoughnut")
	health := inReq(webProxy1, 2, "GET", "/healthz")
	health.Source, health.ClientID, health.TLS = "10.42.0.1:41000", "", false
	reset := inReq(webProxy1, 3, "POST", "/api/vote")
	return []tap.Event{
		items,
		rspInit(items, 200, 1500*time.Microsecond),
		rspEnd(items, nil, 1600*time.Microsecond, 512, ""),
		vote,
		rspInit(vote, 200, 2100*time.Microsecond),
		rspEnd(vote, intPtr(14), 2200*time.Microsecond, 0, ""),
		health,
		rspInit(health, 503, 300*time.Microsecond),
		rspEnd(health, nil, 310*time.Microsecond, 2, ""),
		reset,
		rspEnd(reset, nil, 5*time.Millisecond, 100, "connection reset by peer"),
		{Type: tap.TypeDropped, Time: tapEpoch, ProxyAddr: webProxy1, Workload: "web", Namespace: "default", Dropped: 7},
		{Type: tap.TypeError, Time: tapEpoch, ProxyAddr: "10.42.0.13:4191", Workload: "web", Namespace: "default", Error: "dial tcp 10.42.0.13:4191: connection refused"},
		// A type this CLI does not know (a newer control plane): kept, not dropped.
		{Type: "requestTrailers", Time: tapEpoch, ID: 9, ProxyAddr: webProxy0, Workload: "web", Proxy: "inbound",
			Source: "10.42.0.7:50312", Destination: "10.42.0.11:8080", TLS: true},
	}
}

func TestTapLinesGolden(t *testing.T) {
	for _, wide := range []bool{false, true} {
		name := "tap_lines"
		if wide {
			name += "_wide"
		}
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			for _, ev := range tapLineEvents() {
				b.WriteString(tapLine(ev, wide) + "\n")
			}
			checkGolden(t, name, b.String())
		})
	}
}

// The -o json schema: the keys of every object are part of the CLI's
// interface (scripts and the dashboard read them). A renamed, added or
// removed field must break these tests; update the lists on purpose.

var (
	statKeys = []string{
		"namespace", "kind", "name", "meshed", "instances",
		"success", "rps", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms",
		"tcpConnections", "unauthorizedPerSec", "readBytesPerSec", "writeBytesPerSec",
	}
	routeKeys = []string{
		"route", "kind", "service",
		"success", "rps", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms",
		"retriesPerSec", "timeoutsPerSec",
	}
	// The default route has no kind.
	defaultRouteKeys = []string{
		"route", "service",
		"success", "rps", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms",
		"retriesPerSec", "timeoutsPerSec",
	}
	unsecuredEdgeKeys = []string{"src", "srcNamespace", "dst", "dstNamespace", "secured", "clientId", "serverId", "noTlsReason",
		"success", "rps", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms"}
	// A secured edge has no noTlsReason.
	securedEdgeKeys = []string{"src", "srcNamespace", "dst", "dstNamespace", "secured", "clientId", "serverId",
		"success", "rps", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms"}
	// A fully populated tap event.
	tapEventKeys = []string{
		"type", "time", "id", "proxyAddr", "workload", "namespace", "proxy", "source", "destination",
		"tls", "clientId", "serverId", "route", "labels",
		"method", "scheme", "authority", "path",
		"status", "latencyMicros",
		"grpcStatus", "durationMicros", "bytes", "error",
		"dropped",
	}
	// The least a tap event has.
	minimalTapEventKeys = []string{"type", "time", "proxyAddr", "tls"}
)

// renderJSON renders rows as -o json does and returns its row objects,
// checking the envelope: an object with only a "rows" array, never null.
func renderJSON[T any](t *testing.T, rows []T) []map[string]any {
	t.Helper()
	var b bytes.Buffer
	if err := render(&b, "json", rows, nil); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b.Bytes()) {
		t.Fatalf("-o json is not JSON:\n%s", b.String())
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &top); err != nil {
		t.Fatalf("-o json is not an object: %v\n%s", err, b.String())
	}
	if keys := sortedKeys(top); !slices.Equal(keys, []string{"rows"}) {
		t.Fatalf("-o json top-level keys %v; want [rows]", keys)
	}
	raw := bytes.TrimSpace(top["rows"])
	if len(raw) == 0 || raw[0] != '[' {
		t.Fatalf(`"rows" is %s; want an array`, raw)
	}
	var objs []map[string]any
	if err := json.Unmarshal(raw, &objs); err != nil {
		t.Fatalf(`"rows": %v`, err)
	}
	if len(objs) != len(rows) {
		t.Fatalf("%d rows in the JSON; want %d", len(objs), len(rows))
	}
	return objs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func checkKeys(t *testing.T, what string, obj map[string]any, want []string) {
	t.Helper()
	got, w := sortedKeys(obj), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, w) {
		t.Errorf("%s: JSON keys %v; want %v", what, got, w)
	}
}

func TestJSONSchemaStat(t *testing.T) {
	rows := statWorkloads()
	for i, obj := range renderJSON(t, rows) {
		checkKeys(t, "stat row "+rows[i].Name, obj, statKeys)
	}
	// Without traffic the metrics are null, not 0 (0% success is a value).
	idle := renderJSON(t, statWorkloads()[3:])[0]
	for _, k := range []string{"success", "latencyP50Ms", "latencyP95Ms", "latencyP99Ms"} {
		if v, ok := idle[k]; !ok || v != nil {
			t.Errorf("row without traffic: %s = %v (present %t); want null", k, v, ok)
		}
	}
	// The numbers are as the API gives them, not as the table rounds them.
	web := renderJSON(t, statWorkloads()[2:3])[0]
	if web["success"] != 0.98765 || web["rps"] != 12.3456 || web["tcpConnections"] != 12.0 || web["meshed"] != 3.0 {
		t.Errorf("web row: %v", web)
	}
	for i, obj := range renderJSON(t, statNamespaces()) {
		checkKeys(t, fmt.Sprintf("namespace row %d", i), obj, statKeys)
	}
}

func TestJSONSchemaRoutes(t *testing.T) {
	rows := routeRows()
	for i, obj := range renderJSON(t, rows) {
		want := routeKeys
		if rows[i].Route == metricsapi.DefaultRoute {
			want = defaultRouteKeys
		}
		checkKeys(t, "route "+rows[i].Route, obj, want)
	}
}

func TestJSONSchemaEdges(t *testing.T) {
	rows := edgeRows()
	for i, obj := range renderJSON(t, rows) {
		want := securedEdgeKeys
		if rows[i].NoTLSReason != "" {
			want = unsecuredEdgeKeys
		}
		checkKeys(t, "edge "+rows[i].Src+"→"+rows[i].Dst, obj, want)
		if obj["secured"] != rows[i].Secured {
			t.Errorf("edge %d: secured %v; want %t", i, obj["secured"], rows[i].Secured)
		}
	}
}

func TestJSONSchemaEmpty(t *testing.T) {
	check := func(name string, f func(*bytes.Buffer) error) {
		t.Helper()
		var b bytes.Buffer
		if err := f(&b); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Rows json.RawMessage `json:"rows"`
		}
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b.String())
		}
		if s := string(bytes.Join(bytes.Fields(got.Rows), nil)); s != "[]" {
			t.Errorf(`%s: "rows" is %q; want []`, name, s)
		}
	}
	check("nil stat rows", func(b *bytes.Buffer) error { return render[metricsapi.StatRow](b, "json", nil, nil) })
	check("empty stat rows", func(b *bytes.Buffer) error { return render(b, "json", []metricsapi.StatRow{}, nil) })
	check("nil route rows", func(b *bytes.Buffer) error { return render[metricsapi.RouteRow](b, "json", nil, nil) })
	check("nil edges", func(b *bytes.Buffer) error { return render[metricsapi.Edge](b, "json", nil, nil) })
}

func TestJSONSchemaTapEvent(t *testing.T) {
	full := tap.Event{
		Type: tap.TypeResponseEnd, Time: tapEpoch, ID: 7, ProxyAddr: webProxy0, Workload: "web", Namespace: "default",
		Proxy: "outbound", Source: "10.42.0.11:39100", Destination: "10.42.1.4:8080", TLS: true,
		ClientID: webID, ServerID: votingID, Route: "emojivoto/voting-grpc", Labels: map[string]string{"app": "web"},
		Method: "POST", Scheme: "http", Authority: "voting.emojivoto.svc.cluster.local:8080", Path: "/emojivoto.v1.VotingService/VoteDoughnut",
		Status: 200, LatencyMicros: 2100,
		GRPCStatus: intPtr(14), DurationMicros: 2200, Bytes: 5, Error: "stream reset",
		Dropped: 3,
	}
	minimal := tap.Event{Type: tap.TypeDropped, Time: tapEpoch, ProxyAddr: webProxy1}
	for _, tc := range []struct {
		name string
		ev   tap.Event
		keys []string
	}{
		{"full", full, tapEventKeys},
		{"minimal", minimal, minimalTapEventKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.ev) // as tap -o json prints each event
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			checkKeys(t, "tap event", obj, tc.keys)
			// tap and top read the stream back into Events.
			var back tap.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if again, _ := json.Marshal(back); !bytes.Equal(again, b) {
				t.Errorf("round trip:\n got %s\nwant %s", again, b)
			}
		})
	}
	// A gRPC OK status is a value: it is kept, not omitted as a zero.
	b, _ := json.Marshal(tap.Event{Type: tap.TypeResponseEnd, GRPCStatus: intPtr(0)})
	if !bytes.Contains(b, []byte(`"grpcStatus":0`)) {
		t.Errorf("grpcStatus 0 omitted: %s", b)
	}
}

func TestLatencyFormat(t *testing.T) {
	for v, want := range map[float64]string{
		0.04: "0.0ms", 0.8: "0.8ms", 9.94: "9.9ms",
		9.96: "10ms", // rounds to 10: whole milliseconds, like 10
		10:   "10ms", 47.8: "48ms", 1234.6: "1235ms",
	} {
		if got := latency(&v); got != want {
			t.Errorf("latency(%v) = %q; want %q", v, got, want)
		}
	}
	if got := latency(nil); got != "-" {
		t.Errorf("latency(nil) = %q; want -", got)
	}
}

// Rows of equal count are ordered by source, then destination, method and
// path, whatever the order of the table's map: the order is stable from one
// refresh to the next, even where the fields concatenate alike.
func TestTopTieOrder(t *testing.T) {
	tt := newTopTable()
	for i, k := range []topKey{{"ab", "c", "GET", "/"}, {"a", "bc", "GET", "/"}, {"a", "b", "GET", "/x"}, {"a", "b", "GET", "/"}} {
		tt.rows[k] = &topRow{topKey: k, count: 1, ok: 1, best: time.Duration(i+1) * time.Millisecond,
			worst: time.Duration(i+1) * time.Millisecond, last: time.Duration(i+1) * time.Millisecond}
	}
	var first string
	for i := range 50 {
		var b bytes.Buffer
		tt.print(&b, 30)
		if i == 0 {
			first = b.String()
			continue
		}
		if b.String() != first {
			t.Fatalf("order changed between prints:\n%s\nthen:\n%s", first, b.String())
		}
	}
	checkGolden(t, "top_tie_order", first)
}

// authz puts what the proxies decided beside the policy: each
// authorization's rate, then the Server's denials and audits, then what no
// Server of the policy explains (a default policy's decisions).
func TestGoldenAuthzDecisions(t *testing.T) {
	web := &policyv1.Authentication{Kind: "MeshTLSAuthentication", Name: "web-only", Identities: []string{"spiffe://cluster.local/ns/default/sa/web"}}
	p := &policyv1.InboundPolicy{Servers: []*policyv1.Server{
		{Name: "emoji-grpc", Port: 8080, Audit: true, Authorizations: []*policyv1.Authorization{
			{Name: "emoji-from-web", Authentications: []*policyv1.Authentication{web}},
			{Name: "list-from-web", Route: "default/list", Authentications: []*policyv1.Authentication{web}},
		}},
		{Name: "admin", Port: 9000},
	}}
	decided := []metricsapi.AuthzRow{
		{ServerKind: "server", Server: "emoji-grpc", AuthzKind: "authorizationpolicy", Authz: "emoji-from-web", PerSec: 12.25},
		{ServerKind: "server", Server: "emoji-grpc", Route: "list", AuthzKind: "authorizationpolicy", Authz: "emoji-from-web", PerSec: 1}, // a Server-wide one, on a route
		{ServerKind: "server", Server: "emoji-grpc", AuthzKind: "audit", Authz: "emoji-grpc", PerSec: 0.5},
		{ServerKind: "server", Server: "emoji-grpc", Route: "list", AuthzKind: "default", Authz: "probe", PerSec: 0.2},
		{ServerKind: "server", Server: "admin", Denied: true, PerSec: 3},
		{ServerKind: "default", Server: "all-authenticated", AuthzKind: "default", Authz: "all-authenticated", PerSec: 1},
		{ServerKind: "default", Server: "all-authenticated", Denied: true, PerSec: 0.1},
	}
	var b bytes.Buffer
	printAuthz(&b, "emoji", p, decided)
	checkGolden(t, "authz_decisions", b.String())
}

// explain: a decision per request, newest first, with what was decided
// for it below.
func TestGoldenExplain(t *testing.T) {
	at := time.Date(2026, 12, 6, 7, 21, 3, 123e6, time.UTC)
	list := []tap.Explained{
		{Workload: "emoji-0", Namespace: "default", Time: at, Direction: "inbound", Method: "POST", Authority: "emoji:8080", Path: "/emoji.Emoji/List",
			Status: 403, Client: "10.0.0.9:5000", ClientID: "spiffe://cluster.local/ns/default/sa/traffic",
			Policy: &tap.Policy{Server: "emoji-grpc", Reason: "no authorization policy of Server emoji-grpc allows the client"}},
		{Workload: "web-0", Namespace: "default", Time: at.Add(-time.Millisecond), Direction: "inbound", Method: "POST", Authority: "web:8080", Path: "/api/vote",
			Client: "10.0.0.9:5001", ClientID: "spiffe://cluster.local/ns/default/sa/traffic",
			Policy: &tap.Policy{Server: "web-http", Route: "web-vote", Authorization: "audit", Allowed: true, Reason: "no authorization policy of Server web-http allows the client"}},
		{Workload: "web-0", Namespace: "default", Time: at.Add(-2 * time.Millisecond), Direction: "inbound", Method: "GET", Authority: "10.0.0.4:8080", Path: "/healthz",
			Client: "10.0.0.1:40000", Policy: &tap.Policy{Server: "default:deny", Authorization: "probe", Allowed: true}},
		{Workload: "web-0", Namespace: "default", Time: at.Add(-3 * time.Millisecond), Direction: "outbound", Method: "POST", Authority: "emoji:8080", Path: "/emoji.Emoji/List",
			Status: 200, Route: "default/list", RouteKind: "GRPCRoute", Rule: "0", Backend: "emoji",
			Attempts: []tap.Attempt{{Endpoint: "10.0.0.7:4143", Status: 200, GRPCStatus: 14}, {Endpoint: "10.0.0.8:4143", Status: 200, Why: "retry"}},
			Ejected:  []string{"10.0.0.7:4143"}},
		{Workload: "web-0", Namespace: "default", Time: at.Add(-4 * time.Millisecond), Direction: "outbound", Method: "GET", Authority: "voting:8080", Path: "/",
			Status: 503, FailFast: "no endpoint of voting available for 3s"},
	}
	var b bytes.Buffer
	printExplained(&b, list)
	checkGolden(t, "explain", b.String())
}
