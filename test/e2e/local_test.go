package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// trellisProc is one running `trellis` command.
type trellisProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

// startTrellis runs `trellis args...`, as user uid unless uid < 0.
func startTrellis(t *testing.T, uid int, env []string, args ...string) *trellisProc {
	t.Helper()
	p := &trellisProc{cmd: exec.Command(trellisBin, args...), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), env...)
	if uid >= 0 {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("trellis %v: %v", args, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		// Ctrl-C first, so a failed test still has trellis remove what it
		// set up (namespaces, links); SIGKILL only if it hangs.
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("trellis %v output:\n%s", args, tail(p.out.String(), 80))
		}
	})
	return p
}

// interrupt sends SIGINT (Ctrl-C) and waits for a clean exit.
func (p *trellisProc) interrupt(t *testing.T, within time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("exit after Ctrl-C: %v", p.err)
		}
	case <-time.After(within):
		t.Fatalf("not stopped within %v of Ctrl-C", within)
	}
}

// waitOutput waits for re in the output and returns its submatches.
func (p *trellisProc) waitOutput(t *testing.T, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		select {
		case <-p.exited:
			t.Fatalf("exited (%v) before printing %q", p.err, re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v", re, within)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// workload is what `trellis get workloads -o json` says of one instance.
type workload struct {
	Metadata struct {
		Name   string
		Labels map[string]string
	}
	Spec struct {
		Service, Identity, Address string
		AdminPort, MeshPort        int
	}
}

func workloads(t *testing.T, dataDir string) map[string]workload {
	t.Helper()
	out, err := exec.Command(trellisBin, "--data-dir", dataDir, "get", "workloads", "-A", "-o", "json").Output()
	if err != nil {
		t.Fatalf("trellis get workloads: %v", err)
	}
	var list struct{ Items []workload }
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("trellis get workloads -o json: %v\n%s", err, out)
	}
	m := map[string]workload{}
	for _, w := range list.Items {
		m[w.Metadata.Name] = w
	}
	return m
}

// checkLeanBinaries asserts that the control plane in dataDir runs
// trellis-control and its proxies (the processes given its files) are want
// trellis-proxy processes: each the lean binary for its job, not the CLI.
func checkLeanBinaries(t *testing.T, dataDir string, want int) {
	t.Helper()
	out, err := exec.Command(trellisBin, "--data-dir", dataDir, "status", "-o", "json").Output()
	var st struct{ PID int }
	if err != nil || json.Unmarshal(out, &st) != nil || st.PID == 0 {
		t.Errorf("trellis status -o json: %v\n%s", err, out)
	} else if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.PID)); err != nil || exe != controlBin {
		t.Errorf("the control plane (pid %d) runs %q (%v), want %s", st.PID, exe, err, controlBin)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, f := range procs {
		b, err := os.ReadFile(f)
		args := strings.Split(string(b), "\x00")
		if err != nil || !slices.Contains(args, "--destination-addr") || !strings.Contains(string(b), dataDir) {
			continue
		}
		n++
		if exe, err := os.Readlink(filepath.Join(filepath.Dir(f), "exe")); err != nil || exe != proxyBin {
			t.Errorf("proxy process %s (%s) runs %q (%v), want %s", filepath.Dir(f), args[0], exe, err, proxyBin)
		}
	}
	if n != want {
		t.Errorf("%d proxy processes, want %d", n, want)
	}
}

// checkMeshed asserts that every request between the demo's services was
// mutual TLS with the caller's identity: inbound on emoji and voting only
// from web, on web from traffic (besides the test's own plaintext), and
// web's calls out to both over mTLS to the right server identity.
func checkMeshed(t *testing.T, dataDir string) {
	t.Helper()
	id := func(sa string) string { return "spiffe://cluster.local/ns/default/sa/" + sa }
	names := []string{"emoji-0", "emoji-1", "voting-0", "web-0", "traffic-0"}
	// Registration follows the app's start (a retry can take a moment).
	wls := workloads(t, dataDir)
	for deadline := time.Now().Add(10 * time.Second); len(wls) < len(names) && time.Now().Before(deadline); wls = workloads(t, dataDir) {
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	meshedBy := map[string]float64{} // service -> meshed requests its instances served
	for _, name := range names {
		w, ok := wls[name]
		if !ok {
			t.Fatalf("workload %s is not registered: %v", name, wls)
		}
		if w.Spec.Identity != id(w.Spec.Service) {
			t.Errorf("%s registered as %s", name, w.Spec.Identity)
		}
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/metrics", w.Spec.Address, w.Spec.AdminPort))
		if err != nil {
			t.Fatalf("%s metrics: %v", name, err)
		}
		fams, err := metricstest.Parse(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s metrics: %v", name, err)
		}
		want := map[string]string{"emoji": id("web"), "voting": id("web"), "web": id("traffic")}[w.Spec.Service]
		var meshed float64
		for _, m := range fams["request_total"].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			n := m.GetCounter().GetValue()
			switch {
			case l["direction"] == "inbound" && w.Spec.Service == "web" && l["tls"] != "true":
				// the test's own requests, from outside the mesh
			case l["direction"] == "inbound":
				if l["tls"] != "true" || l["client_id"] != want {
					t.Errorf("%s: %v inbound requests with tls=%q client_id=%q; want mTLS from %s", name, n, l["tls"], l["client_id"], want)
				}
				meshed += n
			case l["direction"] == "outbound":
				if l["tls"] != "true" || !strings.HasPrefix(l["server_id"], id("")) {
					t.Errorf("%s: %v outbound requests with tls=%q server_id=%q", name, n, l["tls"], l["server_id"])
				}
			}
		}
		meshedBy[w.Spec.Service] += meshed
	}
	// Peak-EWMA balancing may keep a service's traffic on one replica.
	for _, svc := range []string{"emoji", "voting", "web"} {
		if meshedBy[svc] == 0 {
			t.Errorf("%s served no meshed requests", svc)
		}
	}
}

// leftovers lists what a demo or run may have left behind.
func leftovers(t *testing.T) []string {
	t.Helper()
	var left []string
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "trellis-") {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "trl") || strings.HasPrefix(e.Name(), "trellis") {
				left = append(left, "link "+e.Name())
			}
		}
	}
	if ents, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "trellis-") {
				left = append(left, "/etc/netns/"+e.Name())
			}
		}
	}
	for _, pattern := range []string{"/run/trellis/*.owner", "/run/trellis/netns/*"} {
		records, _ := filepath.Glob(pattern)
		left = append(left, records...)
	}
	if out, err := exec.Command("pgrep", "-af", trellisBin).Output(); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				left = append(left, "process "+l)
			}
		}
	}
	return left
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	// Counters and the header's timestamp change on their own.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ":") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

var (
	demoDataDir = regexp.MustCompile(`TRELLIS_DATA_DIR=(\S+) trellis get workloads`)
	demoWebURL  = regexp.MustCompile(`curl (http://\S+)/api/list`)
	trafficOK   = regexp.MustCompile(`traffic: \d+ requests, [1-9]\d* ok`)
)

// get fetches url and says whether it answered 200.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// TestDemoTransparent is `trellis demo` as root: serving meshed traffic
// within 10 s, every call mTLS with the right identities, one of emoji's two
// replicas killed with traffic moving to the other within 2 s, and nothing
// left behind after Ctrl-C.
func TestDemoTransparent(t *testing.T) {
	requireTransparent(t)
	if l := leftovers(t); len(l) > 0 {
		t.Fatalf("leftovers before the test: %v", l)
	}
	rulesBefore := iptablesSave(t)
	start := time.Now()
	demo := startTrellis(t, -1, nil, "demo", "--fail-rate", "0", "--rps", "20")
	webURL := demo.waitOutput(t, demoWebURL, 20*time.Second)[1]
	dataDir := demo.waitOutput(t, demoDataDir, time.Second)[1]
	client := &http.Client{Timeout: 5 * time.Second}
	for get(client, webURL+"/api/list") != nil {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the demo was not serving within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	demo.waitOutput(t, trafficOK, 10*time.Second)
	t.Logf("serving meshed traffic %v after start", time.Since(start).Round(time.Millisecond))
	checkMeshed(t, dataDir)
	checkLeanBinaries(t, dataDir, 5)

	killReplica(t, client, webURL, "trellis-default-emoji-0")

	demo.interrupt(t, 30*time.Second)
	if l := leftovers(t); len(l) > 0 {
		t.Errorf("left behind after Ctrl-C: %v", l)
	}
	if after := iptablesSave(t); after != rulesBefore {
		t.Errorf("host nat rules changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the demo's data directory %s is still there (%v)", dataDir, err)
	}
}

// killReplica SIGKILLs everything in a replica's network namespace while
// requests flow to web (which calls emoji); from 2 s after, none may fail.
func killReplica(t *testing.T, client *http.Client, webURL, netns string) {
	t.Helper()
	var killed atomic.Int64
	var failures, total atomic.Int64
	var firstFailure sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				err := get(client, webURL+"/api/list")
				k := killed.Load()
				if k == 0 || time.Since(time.Unix(0, k)) < 2*time.Second {
					continue
				}
				total.Add(1)
				if err != nil {
					failures.Add(1)
					firstFailure.Do(func() { t.Logf("first failure after the 2s: %v", err) })
				}
			}
		})
	}
	time.Sleep(time.Second)
	out, err := exec.Command("ip", "netns", "pids", netns).Output()
	if err != nil {
		cancel()
		t.Fatalf("ip netns pids %s: %v", netns, err)
	}
	pids := strings.Fields(string(out))
	for _, p := range pids {
		if pid, err := strconv.Atoi(p); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	killed.Store(time.Now().UnixNano())
	time.Sleep(5 * time.Second)
	cancel()
	wg.Wait()
	t.Logf("killed %d processes of %s; %d requests from 2s to 5s after, %d failed", len(pids), netns, total.Load(), failures.Load())
	if len(pids) < 2 {
		t.Errorf("expected the proxy and the application in %s, found pids %v", netns, pids)
	}
	if total.Load() < 20 || failures.Load() > 0 {
		t.Errorf("after the kill: %d of %d requests failed", failures.Load(), total.Load())
	}
}

// TestDemoExplicit is the demo without root: explicit mode on loopback,
// every call still mTLS.
func TestDemoExplicit(t *testing.T) {
	const nobody = 65534
	uid := -1
	var env []string
	if os.Geteuid() == 0 {
		home := t.TempDir()
		if err := os.Chown(home, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{filepath.Dir(home), filepath.Dir(filepath.Dir(home))} {
			os.Chmod(d, 0o755)
		}
		uid, env = nobody, []string{"HOME=" + home, "TMPDIR=" + home, "TRELLIS_DATA_DIR=" + filepath.Join(home, ".trellis")}
	}
	start := time.Now()
	demo := startTrellis(t, uid, env, "demo", "--fail-rate", "0", "--rps", "20")
	webURL := demo.waitOutput(t, demoWebURL, 20*time.Second)[1]
	dataDir := demo.waitOutput(t, demoDataDir, time.Second)[1]
	if !strings.Contains(demo.out.String(), "explicit mode") {
		t.Fatalf("not in explicit mode:\n%s", demo.out)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if err := get(client, webURL+"/api/list"); err != nil {
		t.Fatal(err)
	}
	demo.waitOutput(t, trafficOK, 10*time.Second)
	t.Logf("serving meshed traffic %v after start", time.Since(start).Round(time.Millisecond))
	checkMeshed(t, dataDir)
	demo.interrupt(t, 30*time.Second)
	if out, err := exec.Command("pgrep", "-af", trellisBin).Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes left behind: %s", out)
	}
}

// TestControlPlaneRestartUnderLoad restarts the control plane (Ctrl-C,
// then up again) while fortio sends 1,000 requests a second between two
// services meshed in explicit mode: none may fail, and the restarted
// control plane knows the instances it finds. (TestFaultDrill restarts it
// gracefully and with kill -9 in transparent mode.)
func TestControlPlaneRestartUnderLoad(t *testing.T) {
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	// The proxies drop to their own user, the applications to nobody: they
	// must reach the data directory's instance files and the report.
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	upArgs := []string{"--data-dir", dataDir, "up", "--network", "none", "--control-port", strconv.Itoa(freePort(t)), "--admin-addr", loopback(freePort(t))}
	up := startTrellis(t, -1, nil, upArgs...)
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)

	echoPort := freePort(t)
	echo := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "explicit", "--name", "echo", "--port", strconv.Itoa(echoPort),
		"--replicas", "1", "--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	for deadline := time.Now().Add(20 * time.Second); len(workloads(t, dataDir)) < 1; {
		if time.Now().After(deadline) {
			t.Fatalf("echo did not register within 20s:\n%s", echo.out)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	report := filepath.Join(t.TempDir(), "fortio.json")
	os.Chmod(filepath.Dir(report), 0o777) // the application may run unprivileged
	duration := 20 * time.Second
	load := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "explicit", "--name", "load", "--port", strconv.Itoa(freePort(t)), "--restart", "on-failure",
		"--upstream", "echo:"+strconv.Itoa(echoPort), "--", fortio, "load", "-quiet", "-qps", "1000", "-c", "16",
		"-t", duration.String(), "-json", report, "http://$ECHO_ADDR/")
	load.waitOutput(t, regexp.MustCompile(`load-0: started`), 20*time.Second)

	time.Sleep(5 * time.Second)
	up.interrupt(t, 20*time.Second)
	time.Sleep(time.Second) // proxies run on their own meanwhile
	up = startTrellis(t, -1, nil, upArgs...)
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	t.Log("control plane restarted")

	select {
	case <-load.exited:
	case <-time.After(duration + 30*time.Second):
		t.Fatal("the load did not finish")
	}
	res := readFortioReport(t, report, load)
	failed := res.failed()
	t.Logf("fortio: %v, %.0f rps over %v", res.RetCodes, res.ActualQPS, duration)
	if failed > 0 || res.RetCodes["200"] < int64(duration.Seconds()*900) {
		t.Errorf("across a control-plane restart: %d requests failed, %d succeeded", failed, res.RetCodes["200"])
	}
	// The restarted control plane still knows the service and serves it.
	if wls := workloads(t, dataDir); wls["echo-0"].Spec.Service != "echo" {
		t.Errorf("after the restart the registry holds %v", wls)
	}
	echo.interrupt(t, 20*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(workloads(t, dataDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	if wls := workloads(t, dataDir); len(wls) > 0 {
		t.Errorf("still registered after the run stopped: %v", wls)
	}
	load.interrupt(t, 20*time.Second)
	up.interrupt(t, 20*time.Second)
}

// fortioReport is what `fortio load -json` wrote.
type fortioReport struct {
	RetCodes          map[string]int64
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Max         float64 // seconds
		Percentiles []struct{ Percentile, Value float64 }
	}
}

// readFortioReport reads the report at path; load, if not nil, is the
// process whose output explains a missing one.
func readFortioReport(t *testing.T, path string, load *trellisProc) fortioReport {
	t.Helper()
	var r fortioReport
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		out := ""
		if load != nil {
			out = load.out.String()
		}
		t.Fatalf("fortio report: %v\n%s", err, out)
	}
	return r
}

// failed counts the answers other than 200 (errors included).
func (r fortioReport) failed() int64 {
	var n int64
	for code, c := range r.RetCodes {
		if code != "200" {
			n += c
		}
	}
	return n
}

// percentile is the p-th percentile latency in seconds (0 if not reported).
func (r fortioReport) percentile(p float64) float64 {
	for _, q := range r.DurationHistogram.Percentiles {
		if q.Percentile == p {
			return q.Value
		}
	}
	return 0
}

func fortioBin(t *testing.T) string {
	return testkit.Tool(t, "fortio", "fortio.org/fortio@v1.68.2")
}

// TestCrashedInstanceLeavesDiscovery kills `trellis run` and its children
// with SIGKILL, so nobody deregisters: the lease lapses and the workload
// is gone within a few seconds.
func TestCrashedInstanceLeavesDiscovery(t *testing.T) {
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "none", "--control-port", "0", "--admin-addr", loopback(freePort(t)))
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	run := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "explicit", "--name", "echo", "--port", strconv.Itoa(freePort(t)),
		"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	deadline := time.Now().Add(20 * time.Second)
	for len(workloads(t, dataDir)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the instance never registered")
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	run.cmd.Process.Signal(syscall.SIGKILL)
	<-run.exited
	killed := time.Now()
	for len(workloads(t, dataDir)) > 0 {
		if time.Since(killed) > 10*time.Second {
			t.Fatal("the crashed instance was still registered 10s later")
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Logf("gone from the registry %v after the crash (lease 5s)", time.Since(killed).Round(10*time.Millisecond))
	if out, err := exec.Command("pgrep", "-af", proxyBin).Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("the instance's proxy outlived trellis run: %s", out)
	}
}

// Ten `trellis run`s started at once, each with a proxy and an
// upstream, all start: no port is picked by one run and bound later, where
// another can take it first.
func TestConcurrentRunsStart(t *testing.T) {
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "none", "--control-port", "0", "--admin-addr", loopback(freePort(t)))
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	// The applications' ports, as a user picks them: below the ephemeral
	// range the proxies' own ports come from.
	appPort := func() int { return freePort(t) } // (which other tests' ports are kept from)
	var runs []*trellisProc
	first := appPort()
	for i := range 10 {
		name, port := "svc"+strconv.Itoa(i), first
		if i > 0 {
			port = appPort()
		}
		runs = append(runs, startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "explicit", "--name", name,
			"--port", strconv.Itoa(port), "--replicas", "1", "--restart", "never", "--upstream", "svc0:"+strconv.Itoa(first),
			"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
			"-tcp-port", "disabled", "-udp-port", "disabled"))
	}
	for deadline := time.Now().Add(60 * time.Second); len(workloads(t, dataDir)) < 10; time.Sleep(100 * time.Millisecond) {
		for i, r := range runs {
			select {
			case <-r.exited:
				t.Fatalf("run %d exited: %v\n%s", i, r.err, r.out)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 runs registered within 60s", len(workloads(t, dataDir)))
		}
	}
}
