package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// scrape fetches and parses a proxy's /metrics with Prometheus's own parser.
func scrape(t *testing.T, adminAddr string) metricstest.Families {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	families, err := metricstest.Parse(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// sum adds up the samples of family whose labels include want.
func sum(fams metricstest.Families, family string, want map[string]string) float64 {
	return fams.Sum(family, want)
}

func TestMetricsCountWhatWasSent(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	const ok, failed = 37, 5
	client := &http.Client{}
	get := func(path string) {
		resp, err := client.Get("http://" + p.InboundAddr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for i := 0; i < ok; i++ {
		get("/ok")
	}
	for i := 0; i < failed; i++ {
		get("/status/503")
	}
	client.CloseIdleConnections()

	// A response is counted when the proxy's handler returns, which may be
	// a moment after the client read its last byte. A scrape renders
	// response_total before response_latency_seconds, so a response counted
	// in between shows in the second only: wait for both.
	in := map[string]string{"direction": "inbound", "target_addr": b.Listener.Addr().String(), "tls": "disabled"}
	counted := func(fams metricstest.Families) bool {
		return sum(fams, "response_total", in) >= ok+failed && sum(fams, "response_latency_seconds", in) >= ok+failed
	}
	fams := scrape(t, p.AdminAddr.String())
	for deadline := time.Now().Add(2 * time.Second); !counted(fams) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		fams = scrape(t, p.AdminAddr.String())
	}
	if got := sum(fams, "request_total", in); got != ok+failed {
		t.Errorf("request_total = %v; want %d", got, ok+failed)
	}
	if got := sum(fams, "response_total", with(in, "status_code", "200", "classification", "success")); got != ok {
		t.Errorf("response_total{200,success} = %v; want %d", got, ok)
	}
	if got := sum(fams, "response_total", with(in, "status_code", "503", "classification", "failure")); got != failed {
		t.Errorf("response_total{503,failure} = %v; want %d", got, failed)
	}
	if got := sum(fams, "response_latency_seconds", in); got != ok+failed {
		t.Errorf("response_latency_seconds count = %v; want %d", got, ok+failed)
	}
	if got := sum(fams, "tcp_open_total", with(in, "peer", "src")); got < 1 {
		t.Errorf("tcp_open_total{peer=src} = %v", got)
	}
	h := fams["response_latency_seconds"].Metric[0].Histogram
	if len(h.Bucket) != len(metrics.LatencyBucketsMs)+1 {
		t.Fatalf("%d latency buckets; want Linkerd's %d and +Inf", len(h.Bucket), len(metrics.LatencyBucketsMs))
	}
	for i, bkt := range h.Bucket[:len(metrics.LatencyBucketsMs)] {
		if bkt.GetUpperBound() != metrics.LatencyBucketsMs[i]/1000 {
			t.Errorf("bucket %d bound %v; want %v", i, bkt.GetUpperBound(), metrics.LatencyBucketsMs[i]/1000)
		}
	}
}

func TestTCPByteCountersMatchTraffic(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	body := strings.Repeat("z", 100_000)
	resp, err := http.Post("http://"+p.InboundAddr.String()+"/echo", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != len(body) {
		t.Fatalf("echoed %d bytes", len(got))
	}
	// A write is counted once it returned, which may be just after the
	// client read its bytes: wait for the counters to settle.
	var read, written float64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fams := scrape(t, p.AdminAddr.String())
		read = sum(fams, "tcp_read_bytes_total", map[string]string{"direction": "inbound", "peer": "src"})
		written = sum(fams, "tcp_write_bytes_total", map[string]string{"direction": "inbound", "peer": "src"})
		if read >= float64(len(body)) && written >= float64(len(body)) || time.Now().After(deadline) {
			break
		}
	}
	if read < float64(len(body)) || read > float64(len(body))+1000 {
		t.Errorf("read %v bytes from the client; sent %d plus a head", read, len(body))
	}
	if written < float64(len(body)) || written > float64(len(body))+1000 {
		t.Errorf("wrote %v bytes to the client; echoed %d plus a head", written, len(body))
	}
}

func with(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
