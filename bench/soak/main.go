// Command soak runs a local mesh under steady load for a long time, with
// discovery churn, and checks that nothing leaks: it samples every proxy's
// resident memory, open file descriptors and goroutines (from its admin
// /metrics) before the load, through it and after it, and fails when they
// grow.
//
// The mesh: a control plane of its own (its own data directory and bridge,
// so it runs beside others), service "server" of two fortio servers, and a
// client-only workload "load" whose outbound proxy fortio load drives at
// -rps through a pinned upstream port: client → proxy → mTLS → proxy →
// server, two hops. Every -churn the application of server-1 is killed;
// its instance (application and proxy) restarts, so the client's proxy
// sees the endpoint leave and come back. The proxies of load-0 and
// server-0 live through the whole run and are the ones checked.
//
// Usage (root; as bench/run, from the repository):
//
//	go build -o /tmp/trellis-bin/ ./cmd/... && go run ./bench/soak -bin /tmp/trellis-bin -duration 30m
//
// It prints a markdown report (and writes it to -report): the load's
// requests, errors and latency, and per proxy the samples at idle before
// the load ("idle"), one minute into it ("start"), at its last minute
// ("end") and idle after it ("after"). Flat means: end RSS at most 25 %
// plus 4 MiB above start, and after the load, file descriptors and
// goroutines back within a small margin of idle. Standard library only.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin, fortio, report                       string
	duration, churn, sample, warm             time.Duration
	rps, conns, port                          int
	bridge, cidr                              string
	fdMargin, goroutineMargin, rssGrowthRatio float64
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "directory with trellis, trellis-proxy and trellis-control (required)")
	flag.StringVar(&o.fortio, "fortio", "", "fortio binary (default: .tools/bin/fortio, else on PATH)")
	flag.StringVar(&o.report, "report", "", "also write the markdown report to this file")
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "how long the load runs")
	flag.DurationVar(&o.churn, "churn", 30*time.Second, "kill a server application this often (0: never)")
	flag.DurationVar(&o.sample, "sample", time.Minute, "sampling interval during the load")
	flag.DurationVar(&o.warm, "warm", time.Minute, "time into the load of the start sample")
	flag.IntVar(&o.rps, "rps", 1000, "requests per second")
	flag.IntVar(&o.conns, "c", 16, "client connections")
	flag.IntVar(&o.port, "port", 18500, "service port: the servers listen on it and the next one, the load's upstream on port+100")
	flag.StringVar(&o.bridge, "bridge", "trsoak0", "the control plane's bridge")
	flag.StringVar(&o.cidr, "network-cidr", "10.237.0.0/16", "the control plane's network")
	flag.Float64Var(&o.fdMargin, "fd-margin", 16, "open fds allowed above idle after the load")
	flag.Float64Var(&o.goroutineMargin, "goroutine-margin", 32, "goroutines allowed above idle after the load")
	flag.Float64Var(&o.rssGrowthRatio, "rss-growth", 0.25, "RSS growth allowed from start to end of the load (plus 4 MiB)")
	flag.Parse()
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "soak: -bin is required (go build -o DIR/ ./cmd/...)")
		os.Exit(2)
	}
	if o.warm >= o.duration-endBefore {
		fmt.Fprintln(os.Stderr, "soak: -duration must be more than 10 s longer than -warm")
		os.Exit(2)
	}
	flat, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if !flat {
		os.Exit(3)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[soak] "+format+"\n", args...)
}

// mesh is the running mesh: its binaries, data directory and processes.
type mesh struct {
	o       options
	work    string
	trellis string
	runs    []*exec.Cmd
}

func (m *mesh) cli(args ...string) ([]byte, error) {
	cmd := exec.Command(m.trellis, append([]string{"--data-dir", filepath.Join(m.work, "data")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("trellis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// start runs `trellis run ARGS` in the background, logging to name.log.
func (m *mesh) start(name string, args ...string) error {
	logFile, err := os.Create(filepath.Join(m.work, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(m.trellis, append([]string{"--data-dir", filepath.Join(m.work, "data"), "run", "--mode", "explicit"}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	m.runs = append(m.runs, cmd)
	return nil
}

// stop ends the runs (Ctrl-C, as a user would) and the control plane.
func (m *mesh) stop() {
	for _, c := range m.runs {
		c.Process.Signal(syscall.SIGINT)
	}
	for _, c := range m.runs {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
		}
	}
	if out, err := m.cli("down"); err != nil {
		logf("%v: %s", err, out)
	}
}

func run(o options) (bool, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return false, err
	}
	for _, b := range []string{"trellis", "trellis-proxy", "trellis-control"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return false, fmt.Errorf("%s not in -bin %s (go build -o %s/ ./cmd/...)", b, bin, bin)
		}
	}
	fortioBin, err := findFortio(o.fortio)
	if err != nil {
		return false, err
	}
	work, err := os.MkdirTemp("", "trellis-soak-")
	if err != nil {
		return false, err
	}
	// The applications run as nobody: they must reach fortio and write
	// their pid files.
	for _, d := range []string{work, filepath.Join(work, "pids")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return false, err
		}
		os.Chmod(d, 0o777)
	}
	fortio := filepath.Join(work, "fortio")
	if err := copyFile(fortioBin, fortio); err != nil {
		return false, err
	}
	m := &mesh{o: o, work: work, trellis: filepath.Join(bin, "trellis")}
	logf("work directory %s", work)

	logf("starting the control plane (bridge %s, %s)", o.bridge, o.cidr)
	if _, err := m.cli("up", "-d", "--bridge", o.bridge, "--network-cidr", o.cidr); err != nil {
		return false, err
	}
	defer m.stop()
	// Each server application writes its pid where the churn finds it,
	// then becomes fortio.
	app := fmt.Sprintf(`echo $$ > %s/pids/$PORT; exec %s server -http-port $LISTEN_ADDR -grpc-port disabled -redirect-port disabled`, work, fortio)
	if err := m.start("server", "--name", "server", "--port", strconv.Itoa(o.port), "--replicas", "2", "--", "sh", "-c", app); err != nil {
		return false, err
	}
	upstream := o.port + 100
	if err := m.start("load", "--name", "load", "--upstream", fmt.Sprintf("server:%d=%d", o.port, upstream), "--", "sleep", "infinity"); err != nil {
		return false, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/echo", upstream)
	if err := waitOK(url, 2*time.Minute); err != nil {
		return false, err
	}
	proxies, err := m.proxies()
	if err != nil {
		return false, err
	}
	time.Sleep(5 * time.Second)
	samples := map[string][]sample{}
	take := func(phase string) {
		for _, p := range proxies {
			s, err := p.read(phase)
			if err != nil {
				logf("sampling %s: %v", p.name, err)
				continue
			}
			samples[p.name] = append(samples[p.name], s)
		}
	}
	take("idle")

	logf("load: %d rps over %d connections for %v, server-1 killed every %v", o.rps, o.conns, o.duration, o.churn)
	result := filepath.Join(work, "fortio.json")
	load := exec.Command(fortio, "load", "-qps", strconv.Itoa(o.rps), "-c", strconv.Itoa(o.conns), "-t", o.duration.String(),
		"-allow-initial-errors", "-json", result, url)
	loadLog, err := os.Create(filepath.Join(work, "fortio.log"))
	if err != nil {
		return false, err
	}
	load.Stdout, load.Stderr = loadLog, loadLog
	if err := load.Start(); err != nil {
		return false, err
	}
	began := time.Now()
	kills := 0
	churn := tick(o.churn)
	for i, at := range schedule(o) {
		wait := time.NewTimer(time.Until(began.Add(at)))
		for waiting := true; waiting; {
			select {
			case <-churn:
				if err := kill(work, o.port+1); err != nil {
					logf("churn: %v", err)
				} else {
					kills++
				}
			case <-wait.C:
				waiting = false
			}
		}
		phase := "load"
		switch {
		case i == 0:
			phase = "start"
		case at == o.duration-endBefore:
			phase = "end"
		}
		take(phase)
		logf("%v into the load: %s sample (server-1 killed %d times)", at, phase, kills)
	}
	if err := load.Wait(); err != nil {
		return false, fmt.Errorf("fortio load: %v (see %s)", err, loadLog.Name())
	}
	time.Sleep(15 * time.Second) // idle connections close, goroutines end
	take("after")
	res, err := readFortio(result)
	if err != nil {
		return false, err
	}
	report, flat := format(o, res, kills, proxies, samples)
	fmt.Print(report)
	if o.report != "" {
		if err := os.WriteFile(o.report, []byte(report), 0o644); err != nil {
			return flat, err
		}
	}
	return flat, nil
}

// endBefore is how long before the load ends its last sample is taken.
const endBefore = 10 * time.Second

// schedule is when, into the load, samples are taken: the start sample at
// -warm, then every -sample, and the end sample just before the load ends.
func schedule(o options) []time.Duration {
	at := []time.Duration{o.warm}
	for t := o.warm + o.sample; t < o.duration-endBefore; t += o.sample {
		at = append(at, t)
	}
	return append(at, o.duration-endBefore)
}

// tick is a ticker's channel, or nil (never) for d = 0.
func tick(d time.Duration) <-chan time.Time {
	if d <= 0 {
		return nil
	}
	return time.NewTicker(d).C
}

// kill SIGKILLs the server application listening on port.
func kill(work string, port int) error {
	b, err := os.ReadFile(filepath.Join(work, "pids", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

func waitOK(url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the mesh did not serve %s within %v: %v", url, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// proxy is one proxy of the mesh, sampled through its admin /metrics.
type proxy struct{ name, admin string }

// proxies are the workloads' proxies, from the control plane.
func (m *mesh) proxies() ([]proxy, error) {
	out, err := m.cli("get", "workloads", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Spec     struct {
				Address   string
				AdminPort int
			}
		}
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("trellis get workloads: %v", err)
	}
	var ps []proxy
	for _, w := range list.Items {
		ps = append(ps, proxy{name: w.Metadata.Name, admin: fmt.Sprintf("%s:%d", w.Spec.Address, w.Spec.AdminPort)})
	}
	if len(ps) != 3 {
		return nil, fmt.Errorf("%d workloads registered, want 3 (server-0, server-1, load-0)", len(ps))
	}
	// server-1 is the churned one: its proxy is replaced at every kill.
	return slices.DeleteFunc(ps, func(p proxy) bool { return p.name == "server-1" }), nil
}

// sample is what a proxy reported at one time.
type sample struct {
	phase                string
	at                   time.Time
	rss, fds, goroutines float64
}

var sampled = map[string]func(*sample) *float64{
	"process_resident_memory_bytes": func(s *sample) *float64 { return &s.rss },
	"process_open_fds":              func(s *sample) *float64 { return &s.fds },
	"go_goroutines":                 func(s *sample) *float64 { return &s.goroutines },
}

func (p proxy) read(phase string) (sample, error) {
	s := sample{phase: phase, at: time.Now()}
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if f := sampled[name]; ok && f != nil {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return s, fmt.Errorf("%s: %v", name, err)
			}
			*f(&s) = v
			found++
		}
	}
	if found != len(sampled) {
		return s, fmt.Errorf("%s/metrics has %d of the %d process series", p.admin, found, len(sampled))
	}
	return s, sc.Err()
}

// fortioResult is what the report takes from fortio's JSON.
type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]int
	DurationHistogram struct {
		Count       int
		Percentiles []struct{ Percentile, Value float64 }
	}
}

func readFortio(path string) (fortioResult, error) {
	var r fortioResult
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

func (r fortioResult) percentile(p float64) float64 {
	for _, x := range r.DurationHistogram.Percentiles {
		if x.Percentile == p {
			return x.Value * 1000
		}
	}
	return -1
}

// format writes the report and says whether every proxy stayed flat.
func format(o options, r fortioResult, kills int, proxies []proxy, samples map[string][]sample) (string, bool) {
	var b strings.Builder
	failed := r.DurationHistogram.Count - r.RetCodes["200"]
	fmt.Fprintf(&b, "## Soak: %v at %d rps through two mTLS hops, server-1 killed every %v\n\n", o.duration, o.rps, o.churn)
	fmt.Fprintf(&b, "- load: %d requests (%.0f rps), %d not 200, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms; server-1 killed %d times\n",
		r.DurationHistogram.Count, r.ActualQPS, failed, r.percentile(50), r.percentile(99), r.percentile(99.9), kills)
	fmt.Fprintf(&b, "- samples: idle before the load, %v into it (start), at its end, and idle 15 s after it; server-1 (application and proxy) restarts at every kill, so only the long-lived proxies are listed\n\n", o.warm)
	b.WriteString("| proxy | RSS MiB idle / start / end / after | open fds idle / start / end / after | goroutines idle / start / end / after | flat |\n|---|---|---|---|---|\n")
	flat := true
	for _, p := range proxies {
		by := map[string]sample{}
		for _, s := range samples[p.name] {
			by[s.phase] = s // the last of a phase
		}
		idle, start, end, after := by["idle"], by["start"], by["end"], by["after"]
		var why []string
		if len(by) < 4 || by["start"].at.IsZero() || by["end"].at.IsZero() {
			why = append(why, "missing samples")
		}
		if end.rss > start.rss*(1+o.rssGrowthRatio)+4<<20 {
			why = append(why, "RSS grew")
		}
		if after.fds > idle.fds+o.fdMargin {
			why = append(why, "fds not released")
		}
		if after.goroutines > idle.goroutines+o.goroutineMargin {
			why = append(why, "goroutines not released")
		}
		verdict := "yes"
		if len(why) > 0 {
			verdict, flat = "**no**: "+strings.Join(why, ", "), false
		}
		mib := func(s sample) string { return fmt.Sprintf("%.1f", s.rss/(1<<20)) }
		fmt.Fprintf(&b, "| %s | %s / %s / %s / %s | %.0f / %.0f / %.0f / %.0f | %.0f / %.0f / %.0f / %.0f | %s |\n", p.name,
			mib(idle), mib(start), mib(end), mib(after), idle.fds, start.fds, end.fds, after.fds,
			idle.goroutines, start.goroutines, end.goroutines, after.goroutines, verdict)
	}
	return b.String(), flat
}

func findFortio(flagged string) (string, error) {
	if flagged != "" {
		return flagged, nil
	}
	if p, err := exec.LookPath(".tools/bin/fortio"); err == nil {
		return filepath.Abs(p)
	}
	if p, err := exec.LookPath("fortio"); err == nil {
		return p, nil
	}
	return "", errors.New("fortio not found: -fortio PATH, or GOBIN=$PWD/.tools/bin go install fortio.org/fortio@v1.68.2")
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
