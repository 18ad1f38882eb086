package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// procStat fakes /proc/PID/stat with the given utime and stime; the command
// name contains spaces and a parenthesis, as comm may.
func procStat(utime, stime int) string {
	return fmt.Sprintf("42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 %d %d 0 0 20 0 1 0 100 1000 200\n", utime, stime)
}

func procStatus(rssKB, hwmKB int) string {
	return fmt.Sprintf("Name:\tnginx\nVmHWM:\t    %d kB\nVmRSS:\t    %d kB\nThreads:\t1\n", hwmKB, rssKB)
}

func fortioJSON(qps float64, p50, p90, p99, p999 float64, codes string) string {
	return fmt.Sprintf(`{"ActualQPS": %g, "ActualDuration": 1000000000,
"DurationHistogram": {"Count": 1000, "Percentiles": [
 {"Percentile": 50, "Value": %g}, {"Percentile": 90, "Value": %g},
 {"Percentile": 99, "Value": %g}, {"Percentile": 99.9, "Value": %g}]},
"RetCodes": %s}`, qps, p50, p90, p99, p999, codes)
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "meta.tsv"), "command\tbench/run --quick\n_clk_tck\t100\n_gen_cpu\t0\n_sut_cpu\t1\n")
	write(t, filepath.Join(dir, "runs.tsv"), strings.Join([]string{
		"id\tproto\tload\ttarget\thops\ttool\tstatus",
		"1\thttp1\th1-max-64\tdirect\t0\tfortio\tok",
		"2\thttp1\th1-max-64\tnginx\t1\tfortio\tok",
		"3\thttp1\th1-max-64\thaproxy\t1\tfortio\tok",
		"4\thttp1\th1-max-64\ttrellis\t1\tfortio\tskipped: not built",
		"5\th2\th2-max-64\tdirect\t0\th2load\tok",
	}, "\n")+"\n")

	// Direct: 0.1 ms p50 at 10,000 rps.
	write(t, filepath.Join(dir, "runs/1/fortio.json"), fortioJSON(10000, 0.0001, 0.0002, 0.0004, 0.0008, `{"200": 10000}`))
	// nginx: +0.05 ms at p50; 5,000 requests, 2 processes using 10+5 ticks.
	write(t, filepath.Join(dir, "runs/2/fortio.json"), fortioJSON(5000, 0.00015, 0.0003, 0.0006, 0.001, `{"200": 5000}`))
	for pid, ticks := range map[string]int{"10": 0, "11": 15} {
		write(t, filepath.Join(dir, "runs/2/proc", pid+".stat.before"), procStat(100, 100))
		write(t, filepath.Join(dir, "runs/2/proc", pid+".stat.after"), procStat(100+ticks, 100))
		write(t, filepath.Join(dir, "runs/2/proc", pid+".status.idle"), procStatus(1024, 1024))
		write(t, filepath.Join(dir, "runs/2/proc", pid+".status.after"), procStatus(1024, 2048))
	}
	// HAProxy: +0.1 ms at p50, 4,000 requests (2 failed), one process, 12 ticks.
	write(t, filepath.Join(dir, "runs/3/fortio.json"), fortioJSON(4000, 0.0002, 0.0003, 0.0006, 0.001, `{"200": 3998, "-1": 2}`))
	write(t, filepath.Join(dir, "runs/3/proc/20.stat.before"), procStat(0, 0))
	write(t, filepath.Join(dir, "runs/3/proc/20.stat.after"), procStat(10, 2))
	write(t, filepath.Join(dir, "runs/3/proc/20.status.idle"), procStatus(3072, 3072))
	write(t, filepath.Join(dir, "runs/3/proc/20.status.after"), procStatus(3072, 6144))
	// Exact percentiles from an access log win over the histogram.
	var acc strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&acc, `{"latency":%g,"ok":true}`+"\n", float64(i)/1e6)
	}
	write(t, filepath.Join(dir, "runs/3/access.jsonl"), acc.String())
	// h2load direct.
	write(t, filepath.Join(dir, "runs/5/h2load.txt"), "finished in 1.00s, 3.00 req/s, 1KB/s\n"+
		"requests: 3 total, 3 started, 3 done, 3 succeeded, 0 failed, 0 errored, 0 timeout\n")
	write(t, filepath.Join(dir, "runs/5/h2load.log"), "1\t200\t300\n2\t200\t100\n3\t200\t200\n")

	// System calls of the proxies (perf stat -x,) and the host's TCP
	// segments: direct 2 per request, nginx 5 and 4, HAProxy 6 and 4.
	for id, c := range map[string]struct{ syscalls, segsBefore, segsAfter int }{
		"1": {-1, 1000, 21000}, "2": {25000, 2000, 22000}, "3": {24000, 0, 16000},
	} {
		if c.syscalls >= 0 {
			write(t, filepath.Join(dir, "runs", id, "syscalls.perf"),
				fmt.Sprintf("# started on Sun Dec  6 17:51:00 2026\n\n%d,,raw_syscalls:sys_enter,1010942076,100.00,,\n", c.syscalls))
		}
		for suffix, segs := range map[string]int{"before": c.segsBefore, "after": c.segsAfter} {
			write(t, filepath.Join(dir, "runs", id, "snmp."+suffix),
				"Ip: Forwarding DefaultTTL\nIp: 1 64\n"+
					"Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n"+
					fmt.Sprintf("Tcp: 1 200 120000 -1 100 50 0 0 10 %d %d 0 0 0 0\n", 3*segs, segs))
		}
	}

	meta, keys, err := readMeta(filepath.Join(dir, "meta.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	genCPU, sutCPU = 0, 1
	runs, err := readRuns(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.status == "ok" && !r.ok {
			t.Fatalf("run %s: %s", r.id, r.err)
		}
	}

	ng := runs[runKey("h1-max-64", "nginx", 1)]
	if got := ng.cpuPerReq(100); math.Abs(got-30) > 1e-9 { // 15 ticks = 150 ms over 5,000 requests
		t.Errorf("nginx CPU µs/req = %v, want 30", got)
	}
	if ng.rssIdleKB != 2048 || ng.rssLoadKB != 4096 {
		t.Errorf("nginx RSS idle/load = %d/%d kB, want 2048/4096", ng.rssIdleKB, ng.rssLoadKB)
	}
	hp := runs[runKey("h1-max-64", "haproxy", 1)]
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if hp.pctSrc != "exact" || !near(hp.pct[0], 0.5) || !near(hp.pct[3], 0.999) {
		t.Errorf("haproxy percentiles = %v (%s), want exact 0.5 ... 0.999", hp.pct, hp.pctSrc)
	}
	if hp.errs != 2 || hp.count != 4000 {
		t.Errorf("haproxy errors/count = %d/%d, want 2/4000", hp.errs, hp.count)
	}
	h2 := runs[runKey("h2-max-64", "direct", 0)]
	if h2.rps != 3 || !near(h2.pct[0], 0.2) || !near(h2.pct[3], 0.3) {
		t.Errorf("h2load rps/percentiles = %v/%v, want 3/[0.2 ... 0.3]", h2.rps, h2.pct)
	}

	var out bytes.Buffer
	writeReport(&out, meta, keys, runs, 100)
	s := out.String()
	for _, want := range []string{
		"| command | `bench/run --quick` |",
		"| direct | 0.100 | 0.200 | 0.400 | 0.800 | 10000 |",
		"| nginx, 1 hop | +0.050 | +0.100 | +0.200 | +0.200 | 5000 | 30.0 | 15 | 2.0 | 4.0 | 0 |",
		// HAProxy: +0.4 ms at p50 (8×), 30 µs/req (1.00×), RSS 3 MiB (1.50×).
		"| HAProxy, 1 hop | +0.400 (8.00×) |",
		"| 4000 (0.80×) | 30.0 (1.00×) | 12 | 3.0 (1.50×) | 6.0 (1.50×) | 2 (0.05%) |",
		"| trellis-proxy, 1 hop | skipped |",
		// Syscalls and segments per request, the last two columns.
		"| 10000 | – | – | – | – | 0 | – | – | 2.0 |",
		"| 2 (0.05%) | – | 6.0 (1.20×) | 4.0 (1.00×) |",
		"## HTTP/2 (h2c), max rate, 64 B body",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q\n%s", want, s)
		}
	}
	if strings.Contains(s, "_clk_tck") {
		t.Error("report shows internal meta keys")
	}
}

func TestStatFieldsCommWithParens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	write(t, path, procStat(7, 5))
	got, err := statTicks(path)
	if err != nil || got != 12 {
		t.Fatalf("statTicks = %d, %v; want 12", got, err)
	}
}

// metricsBody fakes trellis-proxy A's /metrics response with the given
// outbound connection counts (plaintext and mTLS).
func metricsBody(plain, mesh int) string {
	return "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" +
		"# TYPE tcp_open_total counter\n" +
		fmt.Sprintf("tcp_open_total{direction=\"outbound\",target_addr=\"127.0.0.1:18081\",tls=\"disabled\",peer=\"dst\"} %d\n", plain) +
		fmt.Sprintf("tcp_open_total{direction=\"outbound\",target_addr=\"127.0.0.1:18081\",tls=\"true\",server_id=\"spiffe://cluster.local/ns/bench/sa/server\",peer=\"dst\"} %d\n", mesh) +
		"tcp_open_total{direction=\"outbound\",target_addr=\"127.0.0.1:18004\",tls=\"disabled\",peer=\"src\"} 99999\n"
}

func connloadJSON(conns, errs int, seconds float64) string {
	return fmt.Sprintf(`{"Connections": %d, "Errors": %d, "ErrorKinds": {}, "Seconds": %g, "Rate": %g,
"Percentiles": [{"Percentile": 50, "Value": 1}, {"Percentile": 90, "Value": 2},
 {"Percentile": 99, "Value": 3}, {"Percentile": 99.9, "Value": 4}]}`, conns, errs, seconds, float64(conns)/seconds)
}

func TestReportMTLS(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "meta.tsv"), "command\tbench/run --quick --proxies trellis\n_clk_tck\t100\n_gen_cpu\t0\n_sut_cpu\t1\n")
	write(t, filepath.Join(dir, "runs.tsv"), strings.Join([]string{
		"id\tproto\tload\ttarget\thops\ttool\tstatus",
		"1\thttp1\th1-1k-64\tdirect\t0\tfortio\tok",
		"2\thttp1\th1-1k-64\ttrellis\t2\tfortio\tok",
		"3\thttp1\th1-1k-64\ttrellis-mtls\t2\tfortio\tok",
		"4\thttp1\th1-max-64\tdirect\t0\tfortio\tok",
		"5\thttp1\th1-max-64\ttrellis\t2\tfortio\tok",
		"6\thttp1\th1-max-64\ttrellis-mtls\t2\tfortio\tskipped: trellis-control has no join-token command",
		"7\ttcp\ttcp-conn\tdirect\t0\tconnload\tok",
		"8\ttcp\ttcp-conn\ttrellis\t2\tconnload\tok",
		"9\ttcp\ttcp-conn\ttrellis-mtls\t2\tconnload\tok",
	}, "\n")+"\n")
	procs := func(id string, ticks ...int) {
		for i, n := range ticks {
			pid := fmt.Sprint(100 + i)
			write(t, filepath.Join(dir, "runs", id, "proc", pid+".stat.before"), procStat(0, 0))
			write(t, filepath.Join(dir, "runs", id, "proc", pid+".stat.after"), procStat(n, 0))
			write(t, filepath.Join(dir, "runs", id, "proc", pid+".status.idle"), procStatus(1024, 1024))
			write(t, filepath.Join(dir, "runs", id, "proc", pid+".status.after"), procStatus(1024, 2048))
		}
	}
	ok := `{"200": 10000}`
	write(t, filepath.Join(dir, "runs/1/fortio.json"), fortioJSON(1000, 0.001, 0.002, 0.003, 0.004, `{"200": 10000}`))
	// Plaintext: 10,000 requests, 500+500 ticks = 10 s = 1,000 µs/req;
	// mTLS: 550+550 ticks = 1,100 µs/req = 1.10×, ±(2/1000+2/1100)·1.1.
	write(t, filepath.Join(dir, "runs/2/fortio.json"), fortioJSON(1000, 0.002, 0.003, 0.004, 0.005, ok))
	procs("2", 500, 500)
	write(t, filepath.Join(dir, "runs/2/metrics.before"), metricsBody(1, 0))
	write(t, filepath.Join(dir, "runs/2/metrics.after"), metricsBody(1, 0))
	write(t, filepath.Join(dir, "runs/3/fortio.json"), fortioJSON(1000, 0.003, 0.004, 0.005, 0.006, ok))
	procs("3", 550, 550)
	write(t, filepath.Join(dir, "runs/4/fortio.json"), fortioJSON(20000, 0.001, 0.002, 0.003, 0.004, ok))
	write(t, filepath.Join(dir, "runs/5/fortio.json"), fortioJSON(5000, 0.002, 0.003, 0.004, 0.005, ok))
	procs("5", 100, 100)
	// New connections: direct 4,000/s; plaintext 2,000 in 2 s with 100+100
	// ticks = 1,000 µs/conn; mTLS 1,000 in 2 s (1 failed) with 150+150 ticks
	// = 3,000 µs/conn (3.00×), one mTLS connection A→B per connection.
	write(t, filepath.Join(dir, "runs/7/connload.json"), connloadJSON(8000, 0, 2))
	write(t, filepath.Join(dir, "runs/8/connload.json"), connloadJSON(2000, 0, 2))
	procs("8", 100, 100)
	write(t, filepath.Join(dir, "runs/8/metrics.before"), metricsBody(10, 0))
	write(t, filepath.Join(dir, "runs/8/metrics.after"), metricsBody(2010, 0))
	write(t, filepath.Join(dir, "runs/9/connload.json"), connloadJSON(999, 1, 2))
	procs("9", 150, 150)
	write(t, filepath.Join(dir, "runs/9/metrics.before"), metricsBody(0, 5))
	write(t, filepath.Join(dir, "runs/9/metrics.after"), metricsBody(0, 1005))

	meta, keys, err := readMeta(filepath.Join(dir, "meta.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	genCPU, sutCPU = 0, 1
	runs, err := readRuns(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.status == "ok" && !r.ok {
			t.Fatalf("run %s: %s", r.id, r.err)
		}
	}
	m := runs[runKey("tcp-conn", mtls, 2)]
	if !m.hasMetrics || m.hopConns != 1000 || m.meshConns != 1000 || m.count != 1000 || m.errs != 1 || m.rps != 500 {
		t.Errorf("mTLS conn run: metrics %v hop %d mesh %d count %d errs %d rps %v; want true 1000 1000 1000 1 500",
			m.hasMetrics, m.hopConns, m.meshConns, m.count, m.errs, m.rps)
	}
	if r, unc := cpuRatio(runs[runKey("h1-1k-64", "trellis", 2)], runs[runKey("h1-1k-64", mtls, 2)], 100); math.Abs(r-1.1) > 1e-9 || math.Abs(unc-1.1*(2.0/1000+2.0/1100)) > 1e-9 {
		t.Errorf("cpuRatio = %v ±%v, want 1.10 ±0.004", r, unc)
	}

	var out bytes.Buffer
	writeReport(&out, meta, keys, runs, 100)
	s := out.String()
	for _, want := range []string{
		// Summary: the mTLS row and the line, without nginx ratios (not run).
		"| trellis-proxy, 2 hops, mTLS | +2.000 | +2.000 | +2.000 |",
		"- **mTLS CPU/req vs plaintext 2 hops** (trellis-proxy, HTTP/1.1, 64 B): **1.10×** (target ≤ 1.15×: met) at 1,000 rps.",
		"- **New connections** (with mTLS a stream of the proxies' tunnel connection each): 500/s mTLS vs 1000/s plaintext (0.50×), 3000 vs 1000 CPU µs per connection (3.00× ±0.05).",
		"## mTLS cost (trellis-proxy, 2 hops)",
		"| HTTP/1.1, 1,000 rps, 64 B body | 1000.0 | 1100.0 | **1.10×** (target ≤ 1.15×: met) | 1000 | 1000 (1.00×) | +1.000 | +2.000 | – |",
		"| HTTP/1.1, max rate, 64 B body | ok | skipped | |",
		"| New connections (TCP echo), per connection | 1000.0 | 3000.0 | 3.00× ±0.05 | 1000 | 500 (0.50×) | +0.000 | +0.000 | 1000 |",
		"## New connections per second (TCP echo, one connection per request)",
		"| direct | 1.000 | 2.000 | 3.000 | 4.000 | 4000 | – |",
		"| trellis-proxy, 2 hops | +0.000 | +0.000 | +0.000 | +0.000 | 1000 | 1000.0 | 100 | 1.00 | 0 |",
		"| trellis-proxy, 2 hops, mTLS | +0.000 | +0.000 | +0.000 | +0.000 | 500 (0.50×) | 3000.0 (3.00×) | 150 | 1.00 | 500 | 2.0 (1.00×) | 4.0 (1.00×) | 1 (0.10%) |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q\n%s", want, s)
		}
	}
	if strings.Contains(s, "(n/a)") {
		t.Errorf("report shows ratios to nginx, which did not run\n%s", s)
	}
}

func TestRatioVerdict(t *testing.T) {
	mk := func(ticks int64) *run {
		return &run{ok: true, procs: 2, cpuTicks: ticks, count: 1000}
	}
	for _, tc := range []struct {
		plain, mtls int64
		want        string
	}{
		{1000, 1100, "met"},
		{1000, 1300, "missed"},
		{20, 23, "undecided"}, // 1.15× ±0.2: a 1 s quick run cannot tell
	} {
		got := ratioCell(mk(tc.plain), mk(tc.mtls), 100, true)
		if !strings.Contains(got, tc.want) {
			t.Errorf("ratioCell(%d, %d ticks) = %q, want %q", tc.plain, tc.mtls, got, tc.want)
		}
	}
}
