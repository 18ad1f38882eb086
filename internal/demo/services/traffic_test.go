package services

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// reportLine matches a report; its groups are requests, ok, and skipped.
var reportLine = regexp.MustCompile(`^traffic: (\d+) requests, (\d+) ok \((?:\d+\.\d%|-)\), p50 (?:\d+\.\dms|-), p99 (?:\d+\.\dms|-)(?:, (\d+) skipped)?$`)

// report is one parsed report line.
type report struct{ requests, ok, skipped int }

// parseReports parses lines, failing the test on any that is not a report.
func parseReports(t *testing.T, lines []string) []report {
	t.Helper()
	var out []report
	for _, l := range lines {
		m := reportLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%q is not a report line", l)
		}
		n, _ := strconv.Atoi(m[1])
		ok, _ := strconv.Atoi(m[2])
		skipped, _ := strconv.Atoi(m[3])
		out = append(out, report{n, ok, skipped})
	}
	return out
}

// total adds reports up.
func total(rs []report) report {
	var sum report
	for _, r := range rs {
		sum.requests += r.requests
		sum.ok += r.ok
		sum.skipped += r.skipped
	}
	return sum
}

// runTraffic starts RunTraffic and returns where its reports go.
func runTraffic(t *testing.T, cfg TrafficConfig) (*running, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cfg.Out = out
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = 100 * time.Millisecond
	}
	r := start(t, "traffic", func(ctx context.Context) error { return RunTraffic(ctx, cfg) })
	return r, out
}

// waitReports waits up to 10 s for n reports and returns all so far.
func waitReports(t *testing.T, out *syncBuffer, n int) []report {
	t.Helper()
	if !eventually(10*time.Second, func() bool { return len(out.lines()) >= n }) {
		t.Fatalf("%d report lines after 10s; want %d:\n%s", len(out.lines()), n, strings.Join(out.lines(), "\n"))
	}
	return parseReports(t, out.lines())
}

func TestFormatReport(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, ms(i))
	}
	for _, tc := range []struct {
		requests, ok, skipped int
		latencies             []time.Duration
		want                  string
	}{
		{100, 97, 0, hundred, "traffic: 100 requests, 97 ok (97.0%), p50 50.0ms, p99 99.0ms"},
		{3, 1, 0, []time.Duration{ms(3), 3100 * time.Microsecond, ms(25)}, "traffic: 3 requests, 1 ok (33.3%), p50 3.1ms, p99 25.0ms"},
		{1, 1, 4, []time.Duration{ms(2)}, "traffic: 1 requests, 1 ok (100.0%), p50 2.0ms, p99 2.0ms, 4 skipped"},
		{0, 0, 0, nil, "traffic: 0 requests, 0 ok (-), p50 -, p99 -"},
		{0, 0, 7, nil, "traffic: 0 requests, 0 ok (-), p50 -, p99 -, 7 skipped"},
	} {
		got := formatReport(tc.requests, tc.ok, tc.skipped, tc.latencies)
		if got != tc.want {
			t.Errorf("formatReport(%d, %d, %d, ...) =\n%s; want\n%s", tc.requests, tc.ok, tc.skipped, got, tc.want)
		}
		if !reportLine.MatchString(got) {
			t.Errorf("%q does not match the report pattern", got)
		}
	}
}

func TestWindowSamplesLatencies(t *testing.T) {
	var w window
	for i := range 3 * maxSamples {
		w.record(time.Duration(i), i%3 != 0)
	}
	if w.requests != 3*maxSamples || w.ok != 2*maxSamples || len(w.latencies) != maxSamples {
		t.Errorf("window: %d requests, %d ok, %d latencies kept", w.requests, w.ok, len(w.latencies))
	}
	w.takeReport()
	if w.requests != 0 || w.latencies != nil {
		t.Errorf("takeReport did not start a new window")
	}
}

func TestTrafficConfigCheck(t *testing.T) {
	good := TrafficConfig{WebURL: "http://127.0.0.1:8080", RPS: 20, ReportEvery: time.Second}
	for _, tc := range []struct {
		change func(*TrafficConfig)
		want   string
	}{
		{func(*TrafficConfig) {}, ""},
		{func(c *TrafficConfig) { c.WebURL = "https://web.default.svc.cluster.local/" }, ""},
		{func(c *TrafficConfig) { c.WebURL = "" }, "web URL"},
		{func(c *TrafficConfig) { c.WebURL = "127.0.0.1:8080" }, "web URL"},
		{func(c *TrafficConfig) { c.WebURL = "ftp://web" }, "web URL"},
		{func(c *TrafficConfig) { c.RPS = 0 }, "rps"},
		{func(c *TrafficConfig) { c.RPS = maxRPS + 1 }, "rps"},
		{func(c *TrafficConfig) { c.ReportEvery = 0 }, "report interval"},
		{func(c *TrafficConfig) { c.MaxInFlight = -1 }, "max in flight"},
	} {
		cfg := good
		tc.change(&cfg)
		err := cfg.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Check() = %v; want an error with %q", cfg, err, tc.want)
		}
		if tc.want != "" && RunTraffic(context.Background(), cfg) == nil {
			t.Errorf("RunTraffic(%+v) started", cfg)
		}
	}
}

// TestTrafficCountsFailuresWhenWebIsDown checks that the generator keeps
// going, and reporting, when nothing answers at the web URL.
func TestTrafficCountsFailuresWhenWebIsDown(t *testing.T) {
	lis := listen(t)
	url := "http://" + lis.Addr().String()
	lis.Close()
	_, out := runTraffic(t, TrafficConfig{WebURL: url, RPS: 50})
	var sum report
	if !eventually(10*time.Second, func() bool {
		sum = total(parseReports(t, out.lines()))
		return sum.requests >= 5
	}) {
		t.Fatalf("no requests reported:\n%s", strings.Join(out.lines(), "\n"))
	}
	if sum.ok != 0 {
		t.Errorf("%d of %d requests to a closed port succeeded", sum.ok, sum.requests)
	}
}

// TestTrafficSkipsTicksWhenWebHangs checks that when web never answers, the
// generator keeps at most MaxInFlight requests waiting, skips the other
// ticks, and still stops promptly, leaving no goroutine behind.
func TestTrafficSkipsTicksWhenWebHangs(t *testing.T) {
	before := runtime.NumGoroutine()
	var inFlight, most atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-r.Context().Done()
	}))
	traffic, out := runTraffic(t, TrafficConfig{WebURL: hang.URL, RPS: 200, MaxInFlight: 3})
	rs := waitReports(t, out, 3)
	if sum := total(rs); sum.skipped == 0 || sum.requests != 0 {
		t.Errorf("reports %+v; want skipped ticks and no finished request:\n%s", sum, strings.Join(out.lines(), "\n"))
	}
	stopped := time.Now()
	if err := traffic.stop(); err != nil {
		t.Fatalf("RunTraffic: %v", err)
	}
	if d := time.Since(stopped); d > time.Second {
		t.Errorf("RunTraffic took %v to return with requests hanging", d)
	}
	if m := most.Load(); m > 3 {
		t.Errorf("%d requests were in flight at once; want at most 3", m)
	}
	hang.Close()
	checkNoLeaks(t, before)
}
