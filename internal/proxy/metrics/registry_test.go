package metrics

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestConcurrentRecordingAddsUp(t *testing.T) {
	r := NewRegistry()
	l := Labels{Direction: "outbound", Authority: `we"ird\authority` + "\n", TargetAddr: "10.0.0.1:80", TLS: "disabled"}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := r.HTTP(l)
			tcp := r.TCP(l, "dst")
			for i := 0; i < 1000; i++ {
				h.Request()
				h.Response(200, -1, false, 3*time.Millisecond)
				h.Response(503, -1, true, 70*time.Millisecond)
				h.Response(200, 14, true, time.Millisecond)
				tcp.Open()
				tcp.Read(10)
				tcp.Write(5)
				tcp.Close(false, "")
			}
		}()
	}
	wg.Wait()
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, buf.String())
	}
	want := map[string]float64{"request_total": 8000, "response_total": 24000, "tcp_open_total": 8000, "tcp_read_bytes_total": 80000, "tcp_write_bytes_total": 40000, "tcp_close_total": 8000, "tcp_open_connections": 0}
	for name, v := range want {
		var got float64
		for _, m := range fams[name].GetMetric() {
			got += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		if got != v {
			t.Errorf("%s = %v; want %v", name, got, v)
		}
	}
	for _, m := range fams["response_latency_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["authority"] != l.Authority {
			t.Errorf("authority label %q; want %q", labels["authority"], l.Authority)
		}
		h := m.GetHistogram()
		if labels["status_code"] == "503" {
			// 70 ms lands in the le=100 bucket, not le=50.
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 0.05 && b.GetCumulativeCount() != 0 || b.GetUpperBound() == 0.1 && b.GetCumulativeCount() != 8000 {
					t.Errorf("bucket le=%v count %d", b.GetUpperBound(), b.GetCumulativeCount())
				}
			}
			if s := h.GetSampleSum(); s < 8000*0.0699 || s > 8000*0.0701 {
				t.Errorf("sum %v s; want about %v", s, 8000*0.070)
			}
		}
		if labels["grpc_status"] == "14" && labels["classification"] != "failure" {
			t.Errorf("grpc UNAVAILABLE classified %q", labels["classification"])
		}
	}
	if !strings.Contains(buf.String(), "# TYPE response_latency_seconds histogram") {
		t.Error("histogram type missing")
	}
}

func BenchmarkRecordResponse(b *testing.B) {
	r := NewRegistry()
	l := Labels{Direction: "inbound", TargetAddr: "127.0.0.1:8080", TLS: "disabled"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h := r.HTTP(l)
			h.Request()
			h.Response(200, -1, false, 2*time.Millisecond)
		}
	})
}
