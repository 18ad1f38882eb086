package metricsapi_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// startPrometheus runs Debian's prometheus server scraping the targets in
// the file_sd file at targets every second, and returns its URL.
func startPrometheus(t *testing.T, targets string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (apt-get install prometheus; .ci/run installs it)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(metricsapi.PrometheusConfig(targets, time.Second)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 30s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExternalPrometheus runs the stat and edges queries against a real
// Prometheus server that scrapes the proxies from the file_sd file.
func TestExternalPrometheus(t *testing.T) {
	m := newMesh(t)
	dir := t.TempDir()
	targets, err := metricsapi.Targets(context.Background(), m.store)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "targets.json")
	if err := metricsapi.WriteFileSD(file, targets); err != nil {
		t.Fatal(err)
	}
	ext, err := metricsapi.NewExternal(startPrometheus(t, file))
	if err != nil {
		t.Fatal(err)
	}
	api := &metricsapi.API{Backend: ext, Store: m.store}

	// 30 rps to web-0 at 3 ms, one in fifteen failing; 10 rps to web-1 at
	// 30 ms, all fine: the median is well inside web-0's bucket (2–3 ms),
	// wherever the scrapes of the two fall.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			failed := 0
			if n%5 == 0 {
				failed = 1
			}
			m.traffic("web-0", 3, failed, 3*time.Millisecond)
			m.traffic("web-1", 1, 0, 30*time.Millisecond)
		}
	}()
	var web metricsapi.StatRow
	deadline := time.Now().Add(45 * time.Second)
	for {
		rows, err := api.Stat(context.Background(), metricsapi.StatRequest{Kind: "workload", Name: "web", Namespace: "default", Window: 5 * time.Second})
		if err == nil && len(rows) == 1 && rows[0].RPS > 36 && rows[0].RPS < 44 {
			web = rows[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat from prometheus never showed web at 40 rps: %+v, %v", rows, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if web.Instances != 2 {
		t.Errorf("web instances = %d, want 2", web.Instances)
	}
	near(t, "web success", web.Success, 0.95, 0.02)
	near(t, "web p50", web.LatencyP50, 2+20.0/30, 0.3) // rank 20 of the 30 in (2, 3]
	near(t, "web p99", web.LatencyP99, 29.6, 0.3)      // rank 39.6: 9.6 of the 10 in (20, 30]

	edges, err := api.Edges(context.Background(), metricsapi.EdgesRequest{Window: 5 * time.Second})
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
	near(t, "edge success", gold.Success, 0.95, 0.02)
	if gold.RPS <= 0 {
		t.Errorf("edge rps %v, want > 0", gold.RPS)
	}
}
