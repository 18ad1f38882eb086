package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/web/webtest"
)

// synthetic is a metrics API for a large mesh: n workloads in one
// namespace, each calling the next few, e edges in all.
func synthetic(n, e int) http.Handler {
	name := func(i int) string { return fmt.Sprintf("svc-%03d", i) }
	f := func(v float64) *float64 { return &v }
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/stat", func(w http.ResponseWriter, r *http.Request) {
		rows := []map[string]any{}
		if r.URL.Query().Get("kind") != "server" {
			for i := range n {
				rows = append(rows, map[string]any{"namespace": "big", "kind": "workload", "name": name(i), "meshed": 3, "instances": 3,
					"success": f(1 - float64(i%7)/100), "rps": float64(i%50) + 0.5, "latencyP50Ms": f(2), "latencyP95Ms": f(9), "latencyP99Ms": f(20),
					"tcpConnections": 4, "unauthorizedPerSec": 0})
			}
		}
		reply(w, map[string]any{"rows": rows, "window": "1m0s"})
	})
	mux.HandleFunc("GET /v1/series", func(w http.ResponseWriter, r *http.Request) {
		times := make([]int64, 20)
		for i := range times {
			times[i] = time.Now().Add(time.Duration(i-19) * 30 * time.Second).UnixMilli()
		}
		series := []map[string]any{}
		for i := range n {
			vals := make([]*float64, 20)
			for j := range vals {
				vals[j] = f(float64((i + j) % 13))
			}
			series = append(series, map[string]any{"namespace": "big", "kind": "workload", "name": name(i), "rps": vals, "success": vals,
				"latencyP50Ms": vals, "latencyP95Ms": vals, "latencyP99Ms": vals})
		}
		reply(w, map[string]any{"times": times, "series": series})
	})
	mux.HandleFunc("GET /v1/edges", func(w http.ResponseWriter, r *http.Request) {
		rows := []map[string]any{}
		for i := range n {
			for k := 1; k <= 6 && i+k < n && len(rows) < e; k++ {
				rows = append(rows, map[string]any{"src": name(i), "srcNamespace": "big", "dst": name(i + k), "dstNamespace": "big", "secured": true,
					"clientId": "spiffe://cluster.local/ns/big/sa/" + name(i), "serverId": "spiffe://cluster.local/ns/big/sa/" + name(i+k),
					"success": f(0.999), "rps": 1.5, "latencyP99Ms": f(12)})
			}
		}
		reply(w, map[string]any{"rows": rows, "window": "1m0s"})
	})
	mux.HandleFunc("GET /v1/resources/Workload", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"items": []map[string]any{{"metadata": map[string]any{"name": "svc-000-0", "namespace": "big"}, "spec": map[string]any{}}}})
	})
	return mux
}

// TestLargeMeshRendersInChromium draws the overview and the topology of
// 200 workloads and 1,000 edges in headless Chromium and reports how long
// the first render took (docs/benchmarks.md records it).
func TestLargeMeshRendersInChromium(t *testing.T) {
	const workloads, edges = 200, 1000
	s, _ := serve(t, synthetic(workloads, edges))
	b := webtest.Open(t, s.URL())

	start := time.Now()
	b.Go("#/?ns=big")
	b.WaitFor("the overview's rows", fmt.Sprintf(`document.querySelectorAll("tr[data-row]").length === %d`, workloads), 30*time.Second)
	overview := time.Since(start)

	start = time.Now()
	b.Go("#/topology?ns=big")
	b.WaitFor("the topology's edges", fmt.Sprintf(`document.querySelectorAll("g.edge").length === %d`, edges), 30*time.Second)
	topology := time.Since(start)
	nodes := webtest.Eval[int](b, `document.querySelectorAll("g.node").length`)
	if nodes != workloads {
		t.Errorf("topology: %d nodes, want %d", nodes, workloads)
	}
	t.Logf("first render in Chromium: overview of %d workloads %v; topology of %d nodes and %d edges %v",
		workloads, overview.Round(time.Millisecond), nodes, edges, topology.Round(time.Millisecond))

	// The table sorts by a column from its header's button (reachable by
	// keyboard): by RPS, highest first.
	b.Go("#/?ns=big")
	b.WaitFor("the overview's rows", fmt.Sprintf(`document.querySelectorAll("tr[data-row]").length === %d`, workloads), 30*time.Second)
	webtest.Eval[bool](b, `[...document.querySelectorAll("th button")].find((x) => x.textContent === "RPS").click() || true`)
	first := webtest.Eval[string](b, `document.querySelector("tr[data-row] [data-rps]").dataset.rps`)
	if first != "49.5" {
		t.Errorf("sorted by RPS, the first row has %s rps, want 49.5", first)
	}
}
