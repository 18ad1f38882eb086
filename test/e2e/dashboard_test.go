package e2e

import (
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/web/webtest"
)

var screenshots = flag.String("screenshots", "", "directory for the dashboard test's screenshots (docs/dashboard updates the README's); default a temporary one")

var demoDashboard = regexp.MustCompile(`the dashboard:\s+((http://[^/\s]+)/\?token=\S+)`)

// TestDashboard drives the dashboard of a running `trellis demo` (transparent mode) in
// headless Chromium, as a person would, and compares what it shows with
// the CLI's view of the same mesh. Any console error, or any request to a
// host other than the dashboard's, fails it (webtest).
func TestDashboard(t *testing.T) {
	requireTransparent(t) // the test's own request reaches web through its proxy
	demo := startTrellis(t, -1, nil, "demo", "--rps", "20", "--fail-rate", "0.2", "--metrics-scrape-interval", "1s")
	m := demo.waitOutput(t, demoDashboard, 30*time.Second)
	dash, base := m[1], m[2]
	dataDir := demo.waitOutput(t, demoDataDir, time.Second)[1]
	webURL := demo.waitOutput(t, demoWebURL, time.Second)[1]
	shots := *screenshots
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	// The dashboard answers its own host only, and its API only to a
	// browser that opened its URL (with the token).
	req, _ := http.NewRequest(http.MethodGet, dash, nil)
	req.Host = "rebound.example:80"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("GET %s with Host %s: %v %v, want 421", dash, req.Host, resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get(base + "/v1/stat"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET %s/v1/stat without the token: %v %v, want 401", base, resp, err)
	} else {
		resp.Body.Close()
	}

	// Wait for every edge, and for a whole window (1 min) of traffic, so
	// the rates hold still while the page and the CLI read them.
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(2 * time.Second) {
		var edges []metricsapi.Edge
		trellisJSON(t, dataDir, &edges, "edges", "-o", "json")
		var rows []metricsapi.StatRow
		trellisJSON(t, dataDir, &rows, "stat", "workload/web", "-o", "json")
		if len(edges) == 3 && len(rows) == 1 && rows[0].RPS >= 19 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo's three edges and 20 rps never showed: %+v %+v", edges, rows)
		}
	}
	b := webtest.Open(t, dash)

	// Overview: every workload, each RPS within 10 % of `trellis stat`.
	b.Go("#/?ns=default")
	b.WaitFor("the overview's rows", `document.querySelectorAll("tr[data-row]").length === 4 && document.querySelector('tr[data-row="default/web"] [data-rps]')`, 15*time.Second)
	rps := webtest.Eval[map[string]float64](b, `Object.fromEntries([...document.querySelectorAll("tr[data-row]")].map((r) => [r.dataset.row, Number(r.querySelector("[data-rps]").dataset.rps)]))`)
	var rows []metricsapi.StatRow
	trellisJSON(t, dataDir, &rows, "stat", "workloads", "-o", "json")
	for _, r := range rows {
		shown, ok := rps[r.Namespace+"/"+r.Name]
		if !ok {
			t.Errorf("the overview lacks %s/%s (it has %v)", r.Namespace, r.Name, rps)
			continue
		}
		if math.Abs(shown-r.RPS) > 0.1*r.RPS+0.05 {
			t.Errorf("%s: the overview shows %.2f rps, trellis stat %.2f", r.Name, shown, r.RPS)
		}
	}
	if s := webtest.Eval[string](b, `document.querySelector('tr[data-row="default/voting"] [data-success]')?.dataset.success ?? ""`); s == "" || s >= "1" {
		t.Errorf("voting's success %q in the overview: its injected failures should show", s)
	}
	b.WaitFor("sparklines", `document.querySelector('tr[data-row="default/web"] svg.spark polyline')`, 40*time.Second)
	b.Screenshot(shots, "overview")

	// Topology: exactly the demo's three edges, each mutual TLS.
	b.Go("#/topology?ns=default")
	b.WaitFor("the topology", `document.querySelectorAll("g.edge").length > 0`, 15*time.Second)
	edges := webtest.Eval[[]string](b, `[...document.querySelectorAll("g.edge")].map((e) => e.dataset.src + ">" + e.dataset.dst + " mtls=" + e.dataset.mtls).sort()`)
	want := []string{"default/traffic>default/web mtls=true", "default/web>default/emoji mtls=true", "default/web>default/voting mtls=true"}
	if strings.Join(edges, ",") != strings.Join(want, ",") {
		t.Errorf("topology edges %v, want %v", edges, want)
	}
	b.Screenshot(shots, "topology")

	// A service's page: its charts have data points.
	b.Go("#/workload/default/web?kind=service&ns=default")
	b.WaitFor("web's charts", `document.querySelectorAll("svg[data-points]").length === 3 && [...document.querySelectorAll("svg[data-points]")].every((s) => Number(s.dataset.points) > 0)`, 30*time.Second)
	b.WaitFor("web's routes, edges and instances", `document.querySelectorAll("table").length === 3`, 15*time.Second)
	b.WaitFor("web-0's certificate expiry", `[...document.querySelectorAll("td")].some((td) => /\(in [0-9.]+ h\)/.test(td.textContent))`, 15*time.Second)
	b.Screenshot(shots, "service")

	// Policy: the demo runs without Servers.
	b.Go("#/authz?ns=default&workload=default%2Fweb")
	b.WaitFor("the policy page", `document.querySelector("main select") && document.querySelector("main select").value === "default/web"`, 15*time.Second)
	b.Screenshot(shots, "policy")

	// Live requests: a request the test sends shows within 2 s.
	b.Go("#/tap?target=workload%2Fweb&ns=default&path=%2Fdashboard-probe")
	b.WaitFor("the tap stream", `document.querySelector('[data-state="streaming"]')`, 15*time.Second)
	path := fmt.Sprintf("/dashboard-probe-%d", time.Now().UnixNano())
	sent := time.Now()
	if resp, err := http.Get(webURL + path); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	b.WaitFor("the probe request in the live view", fmt.Sprintf(`document.querySelector('tr[data-path=%q]')`, path), 10*time.Second)
	if d := time.Since(sent); d > 2*time.Second {
		t.Errorf("the live view showed the request %v after it was sent, want within 2s", d)
	}
	b.WaitFor("the top paths", `document.querySelectorAll("main table")[0].querySelectorAll("tbody tr").length > 0`, 5*time.Second)
	b.Screenshot(shots, "live-requests")
}
