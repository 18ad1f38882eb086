// Command report turns the raw results written by bench/run into a Markdown
// report on stdout.
//
// Usage:
//
//	report -dir WORKDIR
//
// WORKDIR holds meta.tsv (key<TAB>value lines describing the run), runs.tsv
// (one line per measurement: id, proto, load, target, hops, tool, status) and,
// for each measurement, runs/ID/ with
//
//   - fortio.json: fortio load -json output (HTTP/1.1 and gRPC),
//   - access.jsonl: fortio -access-log-file output (constant-rate runs); when
//     present, latency percentiles are computed exactly from it instead of
//     from fortio's histogram,
//   - h2load.txt and h2load.log: h2load output and its --log-file,
//   - connload.json: bench/connload output (new connections per second),
//   - metrics.{before,after}: trellis-proxy A's /metrics (HTTP response),
//     from which the connections A opened to B (and how many over mTLS)
//     are counted,
//   - proc/PID.stat.{before,after} and proc/PID.status.{idle,after}: copies of
//     /proc/PID/stat and /proc/PID/status of every proxy process.
//
// For each load it prints one table: direct latency, then for every proxy
// scenario the latency it adds over direct, throughput, proxy CPU time per
// request, RSS idle (VmRSS) and under load (VmHWM), each with its ratio to
// nginx with the same number of hops; then the cost of mutual TLS between
// trellis-proxy's two hops (target "trellis-mtls") against its plaintext 2
// hops, and new connections per second (load "tcp-conn"). It uses only the
// standard library.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// percentiles reported, in order.
var percentiles = []float64{50, 90, 99, 99.9}

// load describes one kind of measurement; keys match bench/run.
type load struct {
	key, title, how string
}

var loads = []load{
	{"h1-1k-64", "HTTP/1.1, 1,000 rps, 64 B body", "fortio `-qps 1000 -c 16 -uniform` (requests spread evenly, not in bursts of 16), keep-alive"},
	{"h1-1k-1024", "HTTP/1.1, 1,000 rps, 1 KiB body", "fortio `-qps 1000 -c 16 -uniform` (requests spread evenly, not in bursts of 16), keep-alive"},
	{"h1-max-64", "HTTP/1.1, max rate, 64 B body", "fortio `-qps 0 -c 16`, keep-alive"},
	{"h1-max-1024", "HTTP/1.1, max rate, 1 KiB body", "fortio `-qps 0 -c 16`, keep-alive"},
	{"h2-max-64", "HTTP/2 (h2c), max rate, 64 B body", "h2load `-p h2c -c 4 -m 4` (16 streams in flight). HAProxy keeps h2 to the next hop (`proto h2`); nginx forwards as HTTP/1.1 keep-alive (its proxy_pass has no HTTP/2 upstream)"},
	{"h2-max-1024", "HTTP/2 (h2c), max rate, 1 KiB body", "h2load `-p h2c -c 4 -m 4` (16 streams in flight). HAProxy keeps h2 to the next hop (`proto h2`); nginx forwards as HTTP/1.1 keep-alive (its proxy_pass has no HTTP/2 upstream)"},
	{"grpc-1k", "gRPC ping, 1,000 rps", "fortio `load -grpc -ping -qps 1000 -c 16 -uniform` against `fortio server`; nginx uses `grpc_pass`, HAProxy `proto h2`"},
	{"grpc-max", "gRPC ping, max rate", "fortio `load -grpc -ping -qps 0 -c 16` against `fortio server`; nginx uses `grpc_pass`, HAProxy `proto h2`"},
	{connLoad, "New connections per second (TCP echo, one connection per request)", "`bench/connload -c 16`, max rate: 16 workers, each connects, sends 32 B, reads the echo from `fortio server`'s TCP echo and closes, so every request is a new connection through both proxies and, with mTLS, a new stream of the tunnel connection between them (opaque connections between two proxies are HTTP/2 CONNECT streams of one pooled mTLS connection: no handshake per connection). Opaque TCP (`--opaque-ports`, no protocol detection). Latency is connect to echo received; ratios are to plaintext 2 hops"},
}

// connLoad is the new-connections load; its table has its own columns.
const connLoad = "tcp-conn"

// scenarios in the order they appear in each table.
var scenarios = []struct {
	target string
	hops   int
}{
	{"direct", 0},
	{"nginx", 1}, {"haproxy", 1}, {"trellis", 1},
	{"nginx", 2}, {"haproxy", 2}, {"trellis", 2}, {mtls, 2},
}

// mtls is trellis-proxy with mutual TLS between its hops.
const mtls = "trellis-mtls"

var targetNames = map[string]string{
	"direct":  "direct",
	"nginx":   "nginx",
	"haproxy": "HAProxy",
	"trellis": "trellis-proxy",
	mtls:      "trellis-proxy",
}

// run is one line of runs.tsv plus its parsed results.
type run struct {
	id, proto, load, target, tool, status string
	hops                                  int

	ok      bool
	err     string  // why the results could not be read
	count   int64   // completed requests
	errs    int64   // requests that did not succeed
	rps     float64 // achieved requests per second
	seconds float64 // measured duration
	pct     []float64
	pctSrc  string // "exact" or "histogram"

	procs     int   // proxy processes sampled
	cpuTicks  int64 // utime+stime delta summed over the proxy processes
	rssIdleKB int64 // sum of VmRSS before any traffic
	rssLoadKB int64 // sum of VmHWM during the run

	// From trellis-proxy A's metrics, when scraped: connections A opened
	// to the next hop during the run, and how many of them were mTLS.
	hopConns, meshConns int64
	hasMetrics          bool

	// CPU time (%) taken on the proxies' and the generator's CPU by
	// processes other than the benchmark's own, plus steal time; NaN if
	// unknown.
	otherSUT, otherGen float64

	// System calls the proxy processes made during the run (perf stat),
	// and TCP segments the whole host sent (/proc/net/snmp OutSegs: the
	// client, the proxies and the backend); -1 if not measured.
	syscalls, segments int64
}

// cpus says where bench/run pinned things (from meta.tsv).
var genCPU, sutCPU = -1, -1

func main() {
	dir := flag.String("dir", "", "bench/run work directory (required)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: report -dir WORKDIR")
		os.Exit(2)
	}
	meta, keys, err := readMeta(filepath.Join(*dir, "meta.tsv"))
	if err != nil {
		fatal(err)
	}
	clk, err := strconv.ParseFloat(meta["_clk_tck"], 64)
	if err != nil || clk <= 0 {
		clk = 100
	}
	if n, err := strconv.Atoi(meta["_gen_cpu"]); err == nil {
		genCPU = n
	}
	if n, err := strconv.Atoi(meta["_sut_cpu"]); err == nil {
		sutCPU = n
	}
	runs, err := readRuns(*dir)
	if err != nil {
		fatal(err)
	}
	w := bufio.NewWriter(os.Stdout)
	writeReport(w, meta, keys, runs, clk)
	if err := w.Flush(); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

func readMeta(path string) (map[string]string, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	meta := map[string]string{}
	var keys []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		k, v, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		if _, dup := meta[k]; !dup {
			keys = append(keys, k)
		}
		meta[k] = v
	}
	return meta, keys, nil
}

func readRuns(dir string) (map[string]*run, error) {
	data, err := os.ReadFile(filepath.Join(dir, "runs.tsv"))
	if err != nil {
		return nil, err
	}
	runs := map[string]*run{}
	for i, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if i == 0 || line == "" {
			continue // header
		}
		f := strings.SplitN(line, "\t", 7)
		if len(f) != 7 {
			return nil, fmt.Errorf("runs.tsv line %d: want 7 fields, got %d", i+1, len(f))
		}
		hops, _ := strconv.Atoi(f[4])
		r := &run{id: f[0], proto: f[1], load: f[2], target: f[3], hops: hops, tool: f[5], status: f[6]}
		if r.status == "ok" {
			if err := r.parse(filepath.Join(dir, "runs", r.id)); err != nil {
				r.err = err.Error()
			} else {
				r.ok = true
			}
		}
		runs[runKey(r.load, r.target, r.hops)] = r
	}
	return runs, nil
}

func runKey(load, target string, hops int) string {
	return fmt.Sprintf("%s/%s/%d", load, target, hops)
}

func (r *run) parse(dir string) error {
	var err error
	switch r.tool {
	case "fortio", "fortio-grpc":
		err = r.parseFortio(dir)
	case "h2load":
		err = r.parseH2load(dir)
	case "connload":
		err = r.parseConnload(dir)
	default:
		err = fmt.Errorf("unknown tool %q", r.tool)
	}
	if err != nil {
		return err
	}
	if r.count == 0 {
		return errors.New("no request completed")
	}
	if r.rps > 0 {
		r.seconds = float64(r.count) / r.rps
	}
	if err := r.parseProc(filepath.Join(dir, "proc")); err != nil {
		return err
	}
	r.otherSUT, r.otherGen = math.NaN(), math.NaN()
	r.parseHost(dir)
	r.parseMetrics(dir)
	r.syscalls = perfCount(filepath.Join(dir, "syscalls.perf"))
	r.segments = -1
	if before, after := outSegs(filepath.Join(dir, "snmp.before")), outSegs(filepath.Join(dir, "snmp.after")); before >= 0 && after >= before {
		r.segments = after - before
	}
	return nil
}

// perfCount reads the event count from perf stat's CSV output (-x,), or
// -1 if there is none.
func perfCount(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		count, _, _ := strings.Cut(line, ",")
		if n, err := strconv.ParseInt(count, 10, 64); err == nil {
			return n
		}
	}
	return -1
}

// outSegs returns the TCP OutSegs counter from a copy of /proc/net/snmp,
// or -1.
func outSegs(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, "Tcp:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "OutSegs" && i < len(f) {
				if n, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// parseMetrics counts the connections trellis-proxy A opened to the next
// hop (tcp_open_total, direction="outbound", peer="dst") between the
// scrapes before and after the run, and those with tls="true".
func (r *run) parseMetrics(dir string) {
	b1, m1, err1 := openCounts(filepath.Join(dir, "metrics.before"))
	b2, m2, err2 := openCounts(filepath.Join(dir, "metrics.after"))
	if err1 != nil || err2 != nil {
		return
	}
	r.hopConns, r.meshConns, r.hasMetrics = b2-b1, m2-m1, true
}

func openCounts(path string) (all, mesh int64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "tcp_open_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		labels := line[:i]
		if !strings.Contains(labels, `direction="outbound"`) || !strings.Contains(labels, `peer="dst"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		found = true
		all += int64(v)
		if strings.Contains(labels, `tls="true"`) {
			mesh += int64(v)
		}
	}
	if !found && !strings.Contains(string(data), "tcp_open_total") {
		return 0, 0, fmt.Errorf("%s: no tcp_open_total", path)
	}
	return all, mesh, nil
}

// connloadResult is bench/connload's -json output.
type connloadResult struct {
	Connections, Errors int64
	Seconds, Rate       float64
	Percentiles         []struct {
		Percentile float64
		Value      float64 // ms
	}
}

func (r *run) parseConnload(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "connload.json"))
	if err != nil {
		return err
	}
	var cr connloadResult
	if err := json.Unmarshal(data, &cr); err != nil {
		return fmt.Errorf("connload.json: %v", err)
	}
	// Like fortio: count every attempt, failed ones as errors.
	r.count, r.errs = cr.Connections+cr.Errors, cr.Errors
	if cr.Seconds > 0 {
		r.rps = float64(r.count) / cr.Seconds
	}
	r.pct, r.pctSrc = make([]float64, len(percentiles)), "exact"
	for i, p := range percentiles {
		r.pct[i] = math.NaN()
		for _, cp := range cr.Percentiles {
			if cp.Percentile == p {
				r.pct[i] = cp.Value
			}
		}
	}
	return nil
}

// parseHost computes how much CPU other processes took during the run from
// per-CPU counters (/proc/stat), the backend's and the load generator's CPU
// time (the latter from the shell's cutime+cstime) and the proxies' CPU time.
func (r *run) parseHost(dir string) {
	before, err1 := cpuStat(filepath.Join(dir, "cpustat.before"))
	after, err2 := cpuStat(filepath.Join(dir, "cpustat.after"))
	sh0, err3 := statFields(filepath.Join(dir, "shell.stat.before"))
	sh1, err4 := statFields(filepath.Join(dir, "shell.stat.after"))
	if err := errors.Join(err1, err2, err3, err4); err != nil || genCPU < 0 || sutCPU < 0 {
		return
	}
	client := (sh1[13] + sh1[14]) - (sh0[13] + sh0[14]) // cutime + cstime
	backend := sumTicks(filepath.Join(dir, "backend"))
	other := func(cpu int, ours int64) float64 {
		b, okb := before[cpu]
		a, oka := after[cpu]
		if !okb || !oka {
			return math.NaN()
		}
		var elapsed int64
		for i := 0; i < 8 && i < len(a); i++ {
			elapsed += a[i] - b[i]
		}
		busy := (a[0] + a[1] + a[2]) - (b[0] + b[1] + b[2]) // user nice system
		var steal int64
		if len(a) > 7 {
			steal = a[7] - b[7]
		}
		if elapsed <= 0 {
			return math.NaN()
		}
		return float64(max(busy-ours, 0)+steal) / float64(elapsed) * 100
	}
	if genCPU == sutCPU {
		r.otherGen = other(genCPU, client+backend+r.cpuTicks)
		r.otherSUT = r.otherGen
		return
	}
	r.otherGen = other(genCPU, client+backend)
	r.otherSUT = other(sutCPU, r.cpuTicks)
}

// cpuStat reads the cpuN lines of a copy of /proc/stat.
func cpuStat(path string) (map[int][]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[int][]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		vals := make([]int64, 0, len(f)-1)
		for _, x := range f[1:] {
			v, _ := strconv.ParseInt(x, 10, 64)
			vals = append(vals, v)
		}
		out[n] = vals
	}
	return out, nil
}

// sumTicks sums utime+stime deltas of the PID.stat.{before,after} in dir.
func sumTicks(dir string) int64 {
	entries, _ := os.ReadDir(dir)
	var sum int64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".stat.before")
		if !ok {
			continue
		}
		b, err1 := statTicks(filepath.Join(dir, name+".stat.before"))
		a, err2 := statTicks(filepath.Join(dir, name+".stat.after"))
		if err1 == nil && err2 == nil {
			sum += a - b
		}
	}
	return sum
}

// fortioResult is the part of fortio's -json output that the report uses.
type fortioResult struct {
	ActualQPS         float64
	ActualDuration    int64 // nanoseconds
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	RetCodes map[string]int64
}

func (r *run) parseFortio(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "fortio.json"))
	if err != nil {
		return err
	}
	var fr fortioResult
	if err := json.Unmarshal(data, &fr); err != nil {
		return fmt.Errorf("fortio.json: %v", err)
	}
	var total, good int64
	for code, n := range fr.RetCodes {
		total += n
		if code == "200" || code == "SERVING" {
			good += n
		}
	}
	if total == 0 {
		total = fr.DurationHistogram.Count
	}
	r.count, r.errs, r.rps = total, total-good, fr.ActualQPS

	if lat, err := readAccessLog(filepath.Join(dir, "access.jsonl")); err == nil && len(lat) > 0 {
		r.pct, r.pctSrc = exactPercentiles(lat), "exact"
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	r.pct, r.pctSrc = make([]float64, len(percentiles)), "histogram"
	for i, p := range percentiles {
		r.pct[i] = math.NaN()
		for _, fp := range fr.DurationHistogram.Percentiles {
			if fp.Percentile == p {
				r.pct[i] = fp.Value * 1e3
			}
		}
	}
	return nil
}

// readAccessLog returns the latencies (ms) from a fortio access log.
func readAccessLog(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lat []float64
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var e struct {
			Latency float64 `json:"latency"` // seconds
		}
		if err := dec.Decode(&e); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		lat = append(lat, e.Latency*1e3)
	}
	return lat, nil
}

var (
	h2Finished = regexp.MustCompile(`finished in [0-9.]+\w+, ([0-9.]+) req/s`)
	h2Requests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded`)
)

func (r *run) parseH2load(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "h2load.txt"))
	if err != nil {
		return err
	}
	m := h2Finished.FindSubmatch(data)
	q := h2Requests.FindSubmatch(data)
	if m == nil || q == nil {
		return errors.New("h2load.txt: no summary (did h2load fail?)")
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	total, _ := strconv.ParseInt(string(q[1]), 10, 64)
	done, _ := strconv.ParseInt(string(q[3]), 10, 64)
	good, _ := strconv.ParseInt(string(q[4]), 10, 64)
	r.count, r.errs = done, total-good

	// --log-file: start time (µs since epoch) TAB status TAB latency (µs).
	f, err := os.Open(filepath.Join(dir, "h2load.log"))
	if err != nil {
		return err
	}
	defer f.Close()
	var lat []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 3 {
			continue
		}
		us, err := strconv.ParseFloat(fields[2], 64)
		if err != nil {
			continue
		}
		lat = append(lat, us/1e3)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(lat) == 0 {
		return errors.New("h2load.log: no requests")
	}
	r.pct, r.pctSrc = exactPercentiles(lat), "exact"
	return nil
}

// exactPercentiles returns the nearest-rank percentiles of lat.
func exactPercentiles(lat []float64) []float64 {
	sort.Float64s(lat)
	out := make([]float64, len(percentiles))
	for i, p := range percentiles {
		rank := int(math.Ceil(p/100*float64(len(lat)) - 1e-9)) // 99.9/100*1000 > 999
		rank = min(max(rank, 1), len(lat))
		out[i] = lat[rank-1]
	}
	return out
}

// parseProc sums CPU ticks and RSS over the proxy processes sampled in dir.
func (r *run) parseProc(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	pids := map[string]bool{}
	for _, e := range entries {
		pid, _, _ := strings.Cut(e.Name(), ".")
		pids[pid] = true
	}
	for pid := range pids {
		p := filepath.Join(dir, pid)
		before, err1 := statTicks(p + ".stat.before")
		after, err2 := statTicks(p + ".stat.after")
		if err1 != nil || err2 != nil {
			continue // process not present for the whole run
		}
		r.procs++
		r.cpuTicks += after - before
		r.rssIdleKB += statusKB(p+".status.idle", "VmRSS")
		r.rssLoadKB += statusKB(p+".status.after", "VmHWM")
	}
	return nil
}

// statFields returns the numeric fields of a copy of /proc/PID/stat after
// the command name: index 0 is field 3 (state, returned as 0), so field N of
// proc(5) is at index N-3 (utime 11, stime 12, cutime 13, cstime 14).
func statFields(path string) ([]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces and parens
	if i < 0 {
		return nil, fmt.Errorf("%s: malformed", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return nil, fmt.Errorf("%s: too few fields", path)
	}
	out := make([]int64, len(f))
	for j, x := range f[1:] {
		out[j+1], _ = strconv.ParseInt(x, 10, 64)
	}
	return out, nil
}

// statTicks returns utime+stime (clock ticks) from a copy of /proc/PID/stat.
func statTicks(path string) (int64, error) {
	f, err := statFields(path)
	if err != nil {
		return 0, err
	}
	return f[11] + f[12], nil
}

// statusKB returns the value of KEY (in kB) from a copy of /proc/PID/status.
func statusKB(path, key string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// ---------------------------------------------------------------------------
// Output.

func writeReport(w io.Writer, meta map[string]string, keys []string, runs map[string]*run, clk float64) {
	fmt.Fprintln(w, "# Trellis benchmarks")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Generated by `bench/run` (re-run with `bench/run --write-docs`); do not edit by hand. The sections after the marker line near the end are measured by their own commands, named in each, and kept by `--write-docs`.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | |")
	fmt.Fprintln(w, "|---|---|")
	for _, k := range keys {
		if strings.HasPrefix(k, "_") {
			continue // for the report only
		}
		v := meta[k]
		if k == "command" {
			v = "`" + v + "`"
		}
		fmt.Fprintf(w, "| %s | %s |\n", k, strings.ReplaceAll(v, "|", "\\|"))
	}
	fmt.Fprintln(w)
	if sut, gen := maxOther(runs); sut > noisy || gen > noisy {
		fmt.Fprintf(w, "> **Warning:** other processes took up to %.0f%% of the proxies' CPU and %.0f%% of the\n"+
			"> generator's CPU during some runs (column *other CPU %%*). Those rows are disturbed;\n"+
			"> re-run on an idle machine before drawing conclusions.\n\n", sut, gen)
	}
	fmt.Fprint(w, legend)

	writeSummary(w, runs, clk)
	writeMTLS(w, runs, clk)

	for _, l := range loads {
		if !hasLoad(runs, l.key) {
			continue
		}
		fmt.Fprintf(w, "\n## %s\n\n%s.\n\n", l.title, l.how)
		if l.key == connLoad {
			writeConnTable(w, runs, l, clk)
		} else {
			writeTable(w, runs, l, clk)
		}
	}
}

const legend = `## Setup

- **Backend**: nginx with one worker returning fixed 64 B and 1 KiB bodies from
  memory (` + "`return 200`" + `) on an HTTP/1.1 port and an h2c port, and ` + "`fortio server`" + `
  for gRPC ping (the only one of the two that speaks it). The backend shares
  a CPU with the load generator, so the cheaper it is, the more of that CPU
  the generator gets and the faster and steadier the direct baseline: when
  this suite was written, nginx took ~10 µs of CPU per 64 B request against
  ~25 µs for ` + "`fortio server`" + `'s HTTP echo, and direct max rate was ~42k rps
  against ~26k; nginx also has no GC pauses to add to the tail.
- **Topology**: client → [proxy A] → [proxy B] → backend on 127.0.0.1. For
  trellis-proxy, 1 hop is one process whose outbound side listens on an
  explicit ` + "`--upstream`" + ` port and forwards to the backend; 2 hops is
  outbound of process A → inbound of process B (` + "`--app-addr`" + ` = backend).
  nginx and HAProxy chains are one or two separate instances, all with
  upstream keep-alive.
- **mTLS**: *trellis-proxy, 2 hops, mTLS* is the same two processes with
  identities (` + "`--identity`" + `, certificates from ` + "`trellis-control identity`" + `
  with join tokens; the identity service runs on the generator CPU and is
  idle after issuing them). A's upstream names the backend's address and B's
  identity (` + "`--upstream bench=PORT:127.0.0.1:BACKEND@spiffe://…/sa/server`" + `)
  and reaches B's inbound port (` + "`--mesh-port`" + `) over TLS 1.3 with client
  certificates; HTTP/1.1, h2c and gRPC all travel between A and B as HTTP/2
  on one multiplexed connection (HTTP/1 restored by B), opaque TCP as
  streams of one tunnel connection (HTTP/2 CONNECT, one stream per client
  connection).
- **New connections**: ` + "`bench/connload`" + ` opens a new TCP connection for every
  request (connect, 32 B, read the echo, close) to ` + "`fortio server`" + `'s TCP echo,
  forwarded as opaque TCP (` + "`--opaque-ports`" + `), so every request costs a
  connection setup and teardown on each hop and, with mTLS, a new stream of
  the tunnel connection between A and B (no handshake of its own).
- **Pinning**: load generator and backend on one CPU, all proxies under test
  on another (taskset); nginx ` + "`worker_processes 1`" + `, HAProxy ` + "`nbthread 1`" + `,
  trellis-proxy ` + "`GOMAXPROCS=1`" + `.

## How to read the tables

- **direct** is client → backend; its latency columns are absolute (ms).
  For proxies, latency columns are the latency **added** over direct (ms)
  at the same percentile, in the same run.
- **rps**: requests per second achieved (the offered rate for 1,000 rps loads).
- **CPU µs/req**: user+system CPU time of all proxy processes of the scenario
  (nginx master and worker, each HAProxy / trellis-proxy process; both proxies
  for 2 hops) from ` + "`/proc/<pid>/stat`" + `, divided by requests completed.
  **proxy CPU %** is the same CPU time over the run's wall time (100% = the
  proxies' one core is saturated).
- **RSS idle**: sum of VmRSS of the proxy processes before any traffic;
  **RSS load**: sum of VmHWM (peak RSS, reset before each run) during the run.
  Summing counts pages shared between nginx's master and worker twice.
- **(N×)** is the ratio to nginx with the same number of hops in the same run
  (lower is better for everything except rps); in the new-connections table
  it is the ratio to trellis-proxy's plaintext 2 hops.
- **mTLS cost**: the *mTLS / plaintext CPU* column of the mTLS table (and the
  line under the summary) divides trellis-proxy 2 hops with mTLS by the same
  2 hops in plaintext, same load, same run; the target is at most 1.15× at
  1,000 rps. ± is only the resolution of the CPU counters (1 clock tick,
  usually 10 ms, per process), so short runs (` + "`--quick`" + `) cannot decide
  the target; judge it from a full run on an idle machine. In HTTP and gRPC
  loads A and B keep one TLS connection, so the ratio is the cost of
  encrypting and of HTTP/2 between the proxies, not of handshakes.
- **New connections**: *conns/s* is connections completed per second (16
  workers, max rate), *CPU µs/conn* both proxies' CPU time per connection.
  *A→B conns per conn* is how many connections proxy A opened to B per
  client connection (from A's ` + "`tcp_open_total`" + `; 1.00 = a fresh one every
  time; 0.00 with mTLS, where connections are streams of A's pooled tunnel
  connection to B) and *mesh TLS handshakes/s* how many of those per second
  were mTLS: the new-connection handshake rate (a tunnel's one handshake
  rounds to 0). A keeps a TLS session cache, so handshakes after the first
  few are TLS 1.3 resumptions (a fresh key exchange, no certificates sent,
  both proxies still check the peer's identity).
- **other CPU %**: CPU time that processes other than the benchmark's own
  (plus hypervisor steal) took on the proxies' CPU / on the generator's CPU
  during the run, from ` + "`/proc/stat`" + `. Above a few percent the row is
  disturbed by other work on the machine; re-run on an idle machine.
- **proxy syscalls/req**: system calls of all kinds (reads, writes, epoll,
  futex, ...) the proxy processes made during the run, counted by
  ` + "`perf stat -e raw_syscalls:sys_enter`" + `, per request; "–" where perf cannot
  count them. **host TCP segments/req**: TCP segments the whole host sent
  (` + "`OutSegs`" + ` of ` + "`/proc/net/snmp`" + `: client, proxies and backend, ACKs
  included) per request; *direct* is the floor, and anything else running on
  the machine adds to it.
- The load generator and backend share one CPU and the proxies have one CPU,
  so max-rate numbers are bounded by whichever side saturates first (see proxy
  CPU %). Latency percentiles at 1,000 rps and for h2load are exact (every
  request recorded); at max rate with fortio they come from fortio's histogram.
`

// noisy is the share of a benchmark CPU (%) taken by other processes above
// which the report warns.
const noisy = 10

// maxOther returns the most CPU (%) other processes took on the proxies' CPU
// (in runs with a proxy) and on the generator's CPU, over all runs.
func maxOther(runs map[string]*run) (sut, gen float64) {
	for _, r := range runs {
		if !r.ok {
			continue
		}
		if r.target != "direct" && !math.IsNaN(r.otherSUT) {
			sut = math.Max(sut, r.otherSUT)
		}
		if !math.IsNaN(r.otherGen) {
			gen = math.Max(gen, r.otherGen)
		}
	}
	return sut, gen
}

func hasLoad(runs map[string]*run, key string) bool {
	for _, r := range runs {
		if r.load == key {
			return true
		}
	}
	return false
}

func scenarioName(target string, hops int) string {
	if target == "direct" {
		return "direct"
	}
	if target == mtls {
		return fmt.Sprintf("%s, %d hops, mTLS", targetNames[target], hops)
	}
	if hops == 1 {
		return targetNames[target] + ", 1 hop"
	}
	return fmt.Sprintf("%s, %d hops", targetNames[target], hops)
}

// added returns the latency that r adds over direct at percentile index i.
func added(r, direct *run, i int) float64 {
	if r == nil || !r.ok || direct == nil || !direct.ok {
		return math.NaN()
	}
	return r.pct[i] - direct.pct[i]
}

func (r *run) cpuPerReq(clk float64) float64 {
	if r == nil || !r.ok || r.procs == 0 {
		return math.NaN()
	}
	return float64(r.cpuTicks) / clk * 1e6 / float64(r.count)
}

func (r *run) cpuPercent(clk float64) float64 {
	if r == nil || !r.ok || r.procs == 0 || r.seconds <= 0 {
		return math.NaN()
	}
	return float64(r.cpuTicks) / clk / r.seconds * 100
}

func (r *run) mib(kb int64) float64 {
	if r == nil || !r.ok || r.procs == 0 || kb == 0 {
		return math.NaN()
	}
	return float64(kb) / 1024
}

// cell formats v with an optional ratio to ref (skipped when ref is NaN).
func cell(format string, v, ref float64, showRatio bool) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := fmt.Sprintf(format, v)
	if showRatio {
		if !math.IsNaN(ref) && ref > 0 && v > 0 {
			s += fmt.Sprintf(" (%.2f×)", v/ref)
		} else {
			s += " (n/a)"
		}
	}
	return s
}

func writeTable(w io.Writer, runs map[string]*run, l load, clk float64) {
	direct := runs[runKey(l.key, "direct", 0)]
	fmt.Fprintln(w, "| scenario | p50 ms | p90 ms | p99 ms | p99.9 ms | rps | CPU µs/req | proxy CPU % | RSS idle MiB | RSS load MiB | errors | other CPU % | proxy syscalls/req | host TCP segments/req |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	var notes []string
	for _, sc := range scenarios {
		r := runs[runKey(l.key, sc.target, sc.hops)]
		if r == nil {
			continue
		}
		name := scenarioName(sc.target, sc.hops)
		if !r.ok {
			why := r.status
			if r.err != "" {
				why = "failed: " + r.err
			}
			word, _, _ := strings.Cut(why, ":")
			fmt.Fprintf(w, "| %s | %s | | | | | | | | | | | | |\n", name, word)
			if word != "skipped" { // skip reasons are in the header
				notes = append(notes, fmt.Sprintf("%s: %s", name, why))
			}
			continue
		}
		if sc.target == "direct" {
			cells := []string{name}
			for i := range percentiles {
				cells = append(cells, cell("%.3f", r.pct[i], 0, false))
			}
			// No proxy runs in this scenario, so only the generator's CPU matters.
			oc := otherCell(r)
			if sutCPU != genCPU && !math.IsNaN(r.otherGen) {
				oc = fmt.Sprintf("– / %.0f", r.otherGen)
			}
			cells = append(cells, cell("%.0f", r.rps, 0, false), "–", "–", "–", "–", errCell(r), oc, "–", perReqCell(r, nil, false, segmentsOf))
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
			continue
		}
		ref := runs[runKey(l.key, "nginx", sc.hops)]
		// No ratios when nginx was not run at all (--proxies).
		showRatio := sc.target != "nginx" && ref != nil
		if ref != nil && !ref.ok {
			ref = nil
		}
		refv := func(f func(*run) float64) float64 {
			if ref == nil {
				return math.NaN()
			}
			return f(ref)
		}
		cells := []string{name}
		for i := range percentiles {
			cells = append(cells, cell("%+.3f", added(r, direct, i), refv(func(x *run) float64 { return added(x, direct, i) }), showRatio))
		}
		cells = append(cells,
			cell("%.0f", r.rps, refv(func(x *run) float64 { return x.rps }), showRatio),
			cell("%.1f", r.cpuPerReq(clk), refv(func(x *run) float64 { return x.cpuPerReq(clk) }), showRatio),
			cell("%.0f", r.cpuPercent(clk), math.NaN(), false),
			cell("%.1f", r.mib(r.rssIdleKB), refv(func(x *run) float64 { return x.mib(x.rssIdleKB) }), showRatio),
			cell("%.1f", r.mib(r.rssLoadKB), refv(func(x *run) float64 { return x.mib(x.rssLoadKB) }), showRatio),
			errCell(r), otherCell(r),
			perReqCell(r, ref, showRatio, syscallsOf), perReqCell(r, ref, showRatio, segmentsOf))
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range dedupe(notes) {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// otherCell shows the CPU taken by other processes on the proxies' CPU and
// on the generator's CPU during the run.
func otherCell(r *run) string {
	if math.IsNaN(r.otherSUT) || math.IsNaN(r.otherGen) {
		return "–"
	}
	if genCPU == sutCPU {
		return fmt.Sprintf("%.0f", r.otherSUT)
	}
	return fmt.Sprintf("%.0f / %.0f", r.otherSUT, r.otherGen)
}

// perReqCell shows what n counts per completed request, with its ratio to
// ref's when showRatio.
func perReqCell(r, ref *run, showRatio bool, n func(*run) int64) string {
	if n(r) < 0 {
		return "–"
	}
	refv := math.NaN()
	if ref != nil && n(ref) >= 0 {
		refv = float64(n(ref)) / float64(ref.count)
	}
	return cell("%.1f", float64(n(r))/float64(r.count), refv, showRatio)
}

func syscallsOf(r *run) int64 { return r.syscalls }
func segmentsOf(r *run) int64 { return r.segments }

func errCell(r *run) string {
	if r.errs == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%.2f%%)", r.errs, 100*float64(r.errs)/float64(max(r.count, 1)))
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// writeSummary prints one line per proxy scenario with the headline numbers:
// added latency at 1,000 rps and throughput/CPU at max rate (HTTP/1.1, 64 B).
func writeSummary(w io.Writer, runs map[string]*run, clk float64) {
	const lat, thr = "h1-1k-64", "h1-max-64"
	if !hasLoad(runs, lat) || !hasLoad(runs, thr) {
		return
	}
	fmt.Fprintln(w, "\n## Summary (HTTP/1.1, 64 B body)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Added latency at 1,000 rps; rps, CPU and peak RSS at max rate. Ratios are to nginx with the same hops.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | +p50 ms | +p99 ms | +p99.9 ms | max rps | CPU µs/req | RSS load MiB |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|")
	dl := runs[runKey(lat, "direct", 0)]
	dt := runs[runKey(thr, "direct", 0)]
	if dl != nil && dl.ok && dt != nil && dt.ok {
		fmt.Fprintf(w, "| direct | %.3f (abs) | %.3f (abs) | %.3f (abs) | %.0f | – | – |\n", dl.pct[0], dl.pct[2], dl.pct[3], dt.rps)
	}
	for _, sc := range scenarios[1:] {
		rl := runs[runKey(lat, sc.target, sc.hops)]
		rt := runs[runKey(thr, sc.target, sc.hops)]
		if rl == nil || rt == nil {
			continue
		}
		name := scenarioName(sc.target, sc.hops)
		if !rl.ok || !rt.ok {
			st := rl.status
			if rl.ok {
				st = rt.status
			}
			word, _, _ := strings.Cut(st, ":")
			fmt.Fprintf(w, "| %s | %s | | | | | |\n", name, word)
			continue
		}
		refL := runs[runKey(lat, "nginx", sc.hops)]
		refT := runs[runKey(thr, "nginx", sc.hops)]
		show := sc.target != "nginx" && refL != nil && refT != nil
		nan := math.NaN()
		rv := func(ref *run, f func(*run) float64) float64 {
			if ref == nil || !ref.ok {
				return nan
			}
			return f(ref)
		}
		cells := []string{name}
		for _, i := range []int{0, 2, 3} {
			cells = append(cells, cell("%+.3f", added(rl, dl, i), rv(refL, func(x *run) float64 { return added(x, dl, i) }), show))
		}
		cells = append(cells,
			cell("%.0f", rt.rps, rv(refT, func(x *run) float64 { return x.rps }), show),
			cell("%.1f", rt.cpuPerReq(clk), rv(refT, func(x *run) float64 { return x.cpuPerReq(clk) }), show),
			cell("%.1f", rt.mib(rt.rssLoadKB), rv(refT, func(x *run) float64 { return x.mib(x.rssLoadKB) }), show))
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if line := mtlsSummary(runs, clk); line != "" {
		fmt.Fprintf(w, "\n%s\n", line)
	}
}

// mtlsTarget is the most CPU per request that mTLS between trellis-proxy's
// two hops may cost, relative to plaintext 2 hops, at 1,000 rps.
const mtlsTarget = 1.15

// mtlsPair returns the plaintext and mTLS trellis-proxy 2-hop runs of load
// (nil when the load has no mTLS run).
func mtlsPair(runs map[string]*run, load string) (plain, m *run) {
	m = runs[runKey(load, mtls, 2)]
	if m == nil {
		return nil, nil
	}
	return runs[runKey(load, "trellis", 2)], m
}

// cpuRatio returns mTLS over plaintext CPU per request and its uncertainty
// from the CPU counters' resolution: /proc reports clock ticks, so each
// process's CPU time in a run is known to about ±1 tick.
func cpuRatio(plain, m *run, clk float64) (ratio, unc float64) {
	a, b := plain.cpuPerReq(clk), m.cpuPerReq(clk)
	if math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0 {
		return math.NaN(), math.NaN()
	}
	ratio = b / a
	rel := func(r *run) float64 { return float64(r.procs) / float64(max(r.cpuTicks, 1)) }
	return ratio, ratio * (rel(plain) + rel(m))
}

// ratioCell formats an mTLS/plaintext CPU ratio with its uncertainty and,
// for constant-rate loads, whether it meets the target.
func ratioCell(plain, m *run, clk float64, target bool) string {
	ratio, unc := cpuRatio(plain, m, clk)
	if math.IsNaN(ratio) {
		return "–"
	}
	s := fmt.Sprintf("%.2f×", ratio)
	if unc >= 0.005 {
		s += fmt.Sprintf(" ±%.2f", unc)
	}
	if target {
		s = "**" + s + "**"
		switch {
		case ratio+unc <= mtlsTarget:
			s += fmt.Sprintf(" (target ≤ %.2f×: met)", mtlsTarget)
		case ratio-unc > mtlsTarget:
			s += fmt.Sprintf(" (target ≤ %.2f×: missed)", mtlsTarget)
		default:
			s += fmt.Sprintf(" (target ≤ %.2f×: undecided at this resolution; run longer)", mtlsTarget)
		}
	}
	return s
}

func bothOK(a, b *run) bool { return a != nil && a.ok && b != nil && b.ok }

// mtlsSummary is the summary's line on the cost of mTLS: CPU per request
// against plaintext 2 hops (HTTP/1.1, 64 B) and new connections per second.
func mtlsSummary(runs map[string]*run, clk float64) string {
	var parts []string
	if p, m := mtlsPair(runs, "h1-1k-64"); bothOK(p, m) {
		parts = append(parts, ratioCell(p, m, clk, true)+" at 1,000 rps")
	}
	if p, m := mtlsPair(runs, "h1-max-64"); bothOK(p, m) {
		parts = append(parts, ratioCell(p, m, clk, false)+" at max rate")
	}
	var out []string
	if len(parts) > 0 {
		out = append(out, "- **mTLS CPU/req vs plaintext 2 hops** (trellis-proxy, HTTP/1.1, 64 B): "+strings.Join(parts, ", ")+".")
	}
	if p, m := mtlsPair(runs, connLoad); bothOK(p, m) {
		out = append(out, fmt.Sprintf("- **New connections** (with mTLS a stream of the proxies' tunnel connection each): %.0f/s mTLS vs %.0f/s plaintext (%.2f×), %.0f vs %.0f CPU µs per connection (%s).",
			m.rps, p.rps, m.rps/p.rps, m.cpuPerReq(clk), p.cpuPerReq(clk), ratioCell(p, m, clk, false)))
	}
	return strings.Join(out, "\n")
}

// writeMTLS prints, for every load, trellis-proxy 2 hops with mTLS against
// the same 2 hops in plaintext.
func writeMTLS(w io.Writer, runs map[string]*run, clk float64) {
	type pair struct {
		l        load
		plain, m *run
	}
	var pairs []pair
	for _, l := range loads {
		if p, m := mtlsPair(runs, l.key); m != nil && p != nil {
			pairs = append(pairs, pair{l, p, m})
		}
	}
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintln(w, "\n## mTLS cost (trellis-proxy, 2 hops)")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Mutual TLS between the two trellis-proxy hops against the same two hops in plaintext, same load, same run.\n"+
		"CPU is both proxies' CPU time per request (per connection for new connections). Target: mTLS costs at most\n"+
		"%.2f× the plaintext CPU per request at 1,000 rps. ± is the resolution of the CPU counters (1 clock tick per\n"+
		"process), not run-to-run noise. *New mesh TLS conns* are the mTLS connections proxy A opened during the\n"+
		"measurement: HTTP and gRPC reuse one connection opened during warm-up, new connections need one each.\n\n", mtlsTarget)
	fmt.Fprintln(w, "| load | plaintext CPU µs/req | mTLS CPU µs/req | mTLS / plaintext CPU | plaintext rps | mTLS rps | plaintext +p99 ms | mTLS +p99 ms | new mesh TLS conns |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, pr := range pairs {
		title := pr.l.title
		if pr.l.key == connLoad {
			title = "New connections (TCP echo), per connection"
		}
		if !bothOK(pr.plain, pr.m) {
			fmt.Fprintf(w, "| %s | %s | %s | | | | | | |\n", title, statusWord(pr.plain), statusWord(pr.m))
			continue
		}
		direct := runs[runKey(pr.l.key, "direct", 0)]
		mesh := "–"
		if pr.m.hasMetrics {
			mesh = strconv.FormatInt(pr.m.meshConns, 10)
		}
		constRate := strings.Contains(pr.l.key, "-1k")
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", title,
			cell("%.1f", pr.plain.cpuPerReq(clk), 0, false),
			cell("%.1f", pr.m.cpuPerReq(clk), 0, false),
			ratioCell(pr.plain, pr.m, clk, constRate),
			cell("%.0f", pr.plain.rps, 0, false),
			cell("%.0f", pr.m.rps, pr.plain.rps, true),
			cell("%+.3f", added(pr.plain, direct, 2), 0, false),
			cell("%+.3f", added(pr.m, direct, 2), 0, false),
			mesh)
	}
}

// statusWord is "ok", or the first word of why a run has no results.
func statusWord(r *run) string {
	if r == nil {
		return "–"
	}
	if r.ok {
		return "ok"
	}
	st := r.status
	if r.err != "" {
		st = "failed"
	}
	word, _, _ := strings.Cut(st, ":")
	return word
}

// writeConnTable prints the new-connections load: direct, then trellis-proxy
// 2 hops in plaintext and with mTLS (ratios to plaintext).
func writeConnTable(w io.Writer, runs map[string]*run, l load, clk float64) {
	direct := runs[runKey(l.key, "direct", 0)]
	plain := runs[runKey(l.key, "trellis", 2)]
	if plain != nil && !plain.ok {
		plain = nil
	}
	fmt.Fprintln(w, "| scenario | p50 ms | p90 ms | p99 ms | p99.9 ms | conns/s | CPU µs/conn | proxy CPU % | A→B conns per conn | mesh TLS handshakes/s | RSS idle MiB | RSS load MiB | errors | other CPU % |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	var notes []string
	for _, sc := range []struct {
		target string
		hops   int
	}{{"direct", 0}, {"trellis", 2}, {mtls, 2}} {
		r := runs[runKey(l.key, sc.target, sc.hops)]
		if r == nil {
			continue
		}
		name := scenarioName(sc.target, sc.hops)
		if !r.ok {
			why := r.status
			if r.err != "" {
				why = "failed: " + r.err
			}
			word, _, _ := strings.Cut(why, ":")
			fmt.Fprintf(w, "| %s | %s | | | | | | | | | | | | |\n", name, word)
			if word != "skipped" {
				notes = append(notes, fmt.Sprintf("%s: %s", name, why))
			}
			continue
		}
		cells := []string{name}
		if sc.target == "direct" {
			for i := range percentiles {
				cells = append(cells, cell("%.3f", r.pct[i], 0, false))
			}
			oc := otherCell(r)
			if sutCPU != genCPU && !math.IsNaN(r.otherGen) {
				oc = fmt.Sprintf("– / %.0f", r.otherGen)
			}
			cells = append(cells, cell("%.0f", r.rps, 0, false), "–", "–", "–", "–", "–", "–", errCell(r), oc)
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
			continue
		}
		show := sc.target == mtls
		ref := func(f func(*run) float64) float64 {
			if plain == nil {
				return math.NaN()
			}
			return f(plain)
		}
		for i := range percentiles {
			cells = append(cells, cell("%+.3f", added(r, direct, i), 0, false))
		}
		perConn, perSec := "–", "–"
		if r.hasMetrics && r.count > 0 && r.seconds > 0 {
			perConn = fmt.Sprintf("%.2f", float64(r.hopConns)/float64(r.count))
			perSec = fmt.Sprintf("%.0f", float64(r.meshConns)/r.seconds)
		}
		cells = append(cells,
			cell("%.0f", r.rps, ref(func(x *run) float64 { return x.rps }), show),
			cell("%.1f", r.cpuPerReq(clk), ref(func(x *run) float64 { return x.cpuPerReq(clk) }), show),
			cell("%.0f", r.cpuPercent(clk), math.NaN(), false),
			perConn, perSec,
			cell("%.1f", r.mib(r.rssIdleKB), ref(func(x *run) float64 { return x.mib(x.rssIdleKB) }), show),
			cell("%.1f", r.mib(r.rssLoadKB), ref(func(x *run) float64 { return x.mib(x.rssLoadKB) }), show),
			errCell(r), otherCell(r))
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range dedupe(notes) {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}
