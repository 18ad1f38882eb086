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
