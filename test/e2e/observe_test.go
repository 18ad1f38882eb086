package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/tap"
)

// trafficReport is one of the generator's 5-second reports.
var trafficReport = regexp.MustCompile(`traffic: (\d+) requests, (\d+) ok \([\d.]+%\), p50 (\S+), p99 (\S+?)(?:,|\n)`)

// genWindow is what the traffic generator measured over its last reports.
type genWindow struct {
	requests, ok int
	p50s, p99s   []float64 // ms, per report
}

// TestDemoObservabilityEmbedded runs the demo (transparent mode) with the
// embedded metrics store and checks stat, edges and tap against what the
// traffic generator itself measured.
func TestDemoObservabilityEmbedded(t *testing.T) {
	requireTransparent(t)
	demo := startTrellis(t, -1, nil, "demo", "--rps", "100", "--metrics-scrape-interval", "1s")
	observeDemo(t, demo)
}

// TestDemoObservabilityPrometheus runs the same checks with the demo
// (explicit mode) querying Debian's Prometheus server, configured with
// `trellis prometheus-config`.
func TestDemoObservabilityPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (apt-get install prometheus; .ci/run installs it)")
	}
	promAddr := loopback(freePort(t))
	demo := startTrellis(t, -1, nil, "demo", "--network", "none", "--rps", "100", "--metrics-scrape-interval", "1s",
		"--prometheus-url", "http://"+promAddr)
	dataDir := demo.waitOutput(t, demoDataDir, 30*time.Second)[1]
	cfg, err := exec.Command(trellisBin, "--data-dir", dataDir, "prometheus-config").Output()
	if err != nil {
		t.Fatalf("trellis prometheus-config: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(bin, "--config.file="+file, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stderr = os.Stderr
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prom.Process.Kill(); prom.Wait() })
	observeDemo(t, demo)
}

func observeDemo(t *testing.T, demo *trellisProc) {
	t.Helper()
	dataDir := demo.waitOutput(t, demoDataDir, 30*time.Second)[1]
	// Every instance registered (on a busy host a first registration can
	// take a while), two reports of warm-up (the store must hold each
	// series before the traffic it counts), then the generator's next four
	// 5 s windows.
	waitRegistered(t, dataDir, 5, 60*time.Second)
	waitReports(t, demo, 2, 30*time.Second)
	checkMeshed(t, dataDir)
	ids := map[string]string{} // service → identity
	wls := workloads(t, dataDir)
	for _, w := range wls {
		ids[w.Spec.Service] = w.Spec.Identity
	}
	// What every proxy exposes passes promtool's lint, as a user would check it.
	for name, w := range wls {
		check := fmt.Sprintf("curl -sf http://%s:%d/metrics | promtool check metrics", w.Spec.Address, w.Spec.AdminPort)
		if out, err := exec.Command("bash", "-c", "set -o pipefail; "+check).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s: %s: %v\n%s", name, check, err, out)
		}
	}
	// web's proxy takes plain HTTP on its inbound port too, in both modes.
	webProxy := fmt.Sprintf("http://%s:%d", wls["web-0"].Spec.Address, wls["web-0"].Spec.MeshPort)

	// The metrics lag the traffic by up to a scrape or two (more for an
	// external Prometheus on a busy host): compare the generator's last four
	// 5 s reports with stat over the same 20 s, and again after the next
	// report, up to four times, until they agree.
	window := "20s"
	waitReports(t, demo, 4, 30*time.Second)
	var rows []metricsapi.StatRow
	var problems []string
	for attempt := 0; ; attempt++ {
		gen := lastReports(t, demo, 4)
		time.Sleep(time.Second) // the report's last second scraped
		rows = nil
		trellisJSON(t, dataDir, &rows, "stat", "workload", "web", "-t", window, "-o", "json")
		from := []metricsapi.StatRow{}
		trellisJSON(t, dataDir, &from, "stat", "workload", "web", "--from", "workload/traffic", "-t", window, "-o", "json")
		problems = nil
		for _, c := range []struct {
			name string
			rows []metricsapi.StatRow
		}{{"stat workload web", rows}, {"stat workload web --from workload/traffic", from}} {
			if len(c.rows) != 1 || c.rows[0].Name != "web" {
				t.Fatalf("%s: rows %+v", c.name, c.rows)
			}
			problems = append(problems, checkStat(t, c.name, c.rows[0], gen)...)
		}
		t.Logf("generator: %d requests, %d ok, p50s %v, p99s %v", gen.requests, gen.ok, gen.p50s, gen.p99s)
		if len(problems) == 0 || attempt == 3 {
			break
		}
		t.Logf("attempt %d: %s", attempt+1, strings.Join(problems, "; "))
		waitReports(t, demo, 1, 15*time.Second)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if rows[0].Meshed != 1 || rows[0].Instances != 1 {
		t.Errorf("web meshed %d/%d, want 1/1", rows[0].Meshed, rows[0].Instances)
	}

	var edges []metricsapi.Edge
	trellisJSON(t, dataDir, &edges, "edges", "-t", window, "-o", "json")
	want := map[string]bool{"traffic>web": true, "web>emoji": true, "web>voting": true}
	for _, e := range edges {
		key := e.Src + ">" + e.Dst
		if !want[key] {
			t.Errorf("unexpected edge %+v", e)
			continue
		}
		delete(want, key)
		if !e.Secured || e.ClientID != ids[e.Src] || e.ServerID != ids[e.Dst] {
			t.Errorf("edge %s: secured %v, client %q, server %q; want mTLS between %q and %q", key, e.Secured, e.ClientID, e.ServerID, ids[e.Src], ids[e.Dst])
		}
	}
	if len(want) > 0 {
		t.Errorf("edges %+v miss %v", edges, want)
	}
	// The table says the same.
	table := trellisOut(t, dataDir, "edges", "-t", window, "-o", "wide")
	if !regexp.MustCompile(`(?m)^traffic\s+web\s+default\s+default\s+√\s+` + regexp.QuoteMeta(ids["traffic"]) + `\s+` + regexp.QuoteMeta(ids["web"]) + `\s*$`).MatchString(table) {
		t.Errorf("edges -o wide:\n%s", table)
	}

	checkTap(t, dataDir, webProxy)

	// A namespace's proxies, and a target nobody serves.
	if out, err := exec.Command(trellisBin, "--data-dir", dataDir, "tap", "namespace/default", "--duration", "2s").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "req id=emoji-") || !strings.Contains(string(out), "req id=web-0:") {
		t.Errorf("tap namespace/default: %v\n%s", err, tail(string(out), 10))
	}
	if out, err := exec.Command(trellisBin, "--data-dir", dataDir, "tap", "workload/nope", "--duration", "2s").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "no registered instance of the target has a tap port") {
		t.Errorf("tap workload/nope = %v:\n%s\nwant a failure saying nothing matched", err, out)
	}
	top := trellisOut(t, dataDir, "top", "workload/web", "--duration", "3s")
	if !regexp.MustCompile(`(?m)^traffic\s+web-0\s+GET\s+/api/list\s+\d+`).MatchString(top) {
		t.Errorf("top workload/web:\n%s", top)
	}
}

// waitRegistered waits for n registered instances.
func waitRegistered(t *testing.T, dataDir string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		wls := workloads(t, dataDir)
		if len(wls) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d instances registered within %v: %v", len(wls), n, within, wls)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitReports waits for the generator's next n reports.
func waitReports(t *testing.T, demo *trellisProc, n int, within time.Duration) {
	t.Helper()
	seen := len(trafficReport.FindAllStringSubmatch(demo.out.String(), -1))
	deadline := time.Now().Add(within)
	for {
		all := trafficReport.FindAllStringSubmatch(demo.out.String(), -1)
		if len(all) >= seen+n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d traffic reports within %v", len(all)-seen, n, within)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// lastReports adds up the generator's last n reports.
func lastReports(t *testing.T, demo *trellisProc, n int) genWindow {
	t.Helper()
	all := trafficReport.FindAllStringSubmatch(demo.out.String(), -1)
	if len(all) < n {
		t.Fatalf("%d traffic reports, want %d", len(all), n)
	}
	var g genWindow
	for _, m := range all[len(all)-n:] {
		req, _ := strconv.Atoi(m[1])
		ok, _ := strconv.Atoi(m[2])
		g.requests += req
		g.ok += ok
		for i, d := range []string{m[3], m[4]} {
			v, err := time.ParseDuration(d)
			if err != nil {
				t.Fatalf("report %q: %v", m[0], err)
			}
			ms := float64(v) / float64(time.Millisecond)
			if i == 0 {
				g.p50s = append(g.p50s, ms)
			} else {
				g.p99s = append(g.p99s, ms)
			}
		}
	}
	return g
}

// checkStat compares a stat row with what the generator measured — success
// within 0.5 points, RPS within 10 %, latency percentiles consistent with
// the generator's (which adds the client proxy's hop) given the
// histogram's bucket resolution — and returns what disagrees.
func checkStat(t *testing.T, name string, r metricsapi.StatRow, gen genWindow) []string {
	t.Helper()
	var problems []string
	wantRPS := float64(gen.requests) / 20
	if math.Abs(r.RPS-wantRPS) > 0.1*wantRPS {
		problems = append(problems, fmt.Sprintf("%s: %.1f rps, generator sent %.1f rps", name, r.RPS, wantRPS))
	}
	wantSuccess := float64(gen.ok) / float64(gen.requests)
	if r.Success == nil || math.Abs(*r.Success-wantSuccess) > 0.005 {
		problems = append(problems, fmt.Sprintf("%s: success %v, generator saw %.4f", name, deref(r.Success), wantSuccess))
	}
	if r.LatencyP50 == nil || r.LatencyP99 == nil || r.LatencyP95 == nil {
		return append(problems, fmt.Sprintf("%s: no latencies: %+v", name, r))
	}
	p50, p95, p99 := *r.LatencyP50, *r.LatencyP95, *r.LatencyP99
	if !(p50 <= p95 && p95 <= p99) {
		problems = append(problems, fmt.Sprintf("%s: percentiles out of order: p50 %.1f p95 %.1f p99 %.1f", name, p50, p95, p99))
	}
	genP50, genP99 := median(gen.p50s), median(gen.p99s)
	// The proxy measures less than the client (one hop fewer) and
	// interpolates within buckets (1 ms wide up to 5 ms, then 5–10 ms).
	if p50 > genP50*1.5+2 || p50 < genP50*0.3-2 {
		problems = append(problems, fmt.Sprintf("%s: p50 %.1f ms, generator's p50 %.1f ms", name, p50, genP50))
	}
	if p99 > genP99*1.5+10 || p99 < genP99*0.3-5 {
		problems = append(problems, fmt.Sprintf("%s: p99 %.1f ms, generator's p99 %.1f ms", name, p99, genP99))
	}
	t.Logf("%s: %.1f rps, success %v, p50 %.1f p95 %.1f p99 %.1f ms", name, r.RPS, deref(r.Success), p50, p95, p99)
	return problems
}

// deref shows an optional value.
func deref(v *float64) any {
	if v == nil {
		return "none"
	}
	return *v
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// checkTap sends requests of its own to web's proxy and expects tap
// (filtered to them: the tap's rate limit would drop most of the demo's
// traffic and with it, at times, the probe) to show one within a second of
// its sending. Probes go every 200 ms until one shows: the first ones may
// precede the tap's start.
func checkTap(t *testing.T, dataDir, webURL string) {
	t.Helper()
	const probe = "/tap-probe-"
	cmd := exec.Command(trellisBin, "--data-dir", dataDir, "tap", "workload/web", "-o", "json", "--duration", "30s", "--path", probe)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	events := make(chan tap.Event, 1024)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev tap.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
	}()
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		client := &http.Client{Timeout: 5 * time.Second}
		for i := 0; ; i++ {
			path := fmt.Sprintf("%s%d", probe, i)
			mu.Lock()
			sentAt[path] = time.Now()
			mu.Unlock()
			if resp, err := client.Get(webURL + path); err == nil {
				resp.Body.Close()
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("tap ended before showing a request")
			}
			if ev.Type != tap.TypeRequestInit {
				continue
			}
			mu.Lock()
			sent, ours := sentAt[ev.Path]
			mu.Unlock()
			if !ours {
				t.Fatalf("tap filtered to %s showed %s", probe, ev.Path)
			}
			d := time.Since(sent)
			if d > time.Second {
				t.Errorf("tap showed the request %v after it was sent, want within 1s", d)
			}
			if ev.Method != "GET" || ev.Proxy != "inbound" || ev.Workload != "web-0" {
				t.Errorf("tap event %+v", ev)
			}
			t.Logf("tap showed the request %v after it was sent", d.Round(time.Millisecond))
			return
		case <-deadline:
			t.Fatal("tap showed none of the requests sent within 20s")
		}
	}
}

// trellisJSON runs a trellis command with -o json and decodes its rows.
func trellisJSON(t *testing.T, dataDir string, rows any, args ...string) {
	t.Helper()
	out := trellisOut(t, dataDir, args...)
	var res struct {
		Rows json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("trellis %v: not JSON (%v):\n%s", args, err, out)
	}
	if err := json.Unmarshal(res.Rows, rows); err != nil {
		t.Fatalf("trellis %v: rows: %v", args, err)
	}
}

func trellisOut(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	out, err := exec.Command(trellisBin, append([]string{"--data-dir", dataDir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("trellis %v: %v\n%s", args, err, out)
	}
	return string(out)
}
