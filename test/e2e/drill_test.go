package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// drillLoad is the load of each fault: fortio through the mesh from its own
// meshed instance to a two-replica service, long enough to see the fault
// begin and end, with a client timeout longer than any pause.
const (
	drillQPS         = 500
	drillConns       = 8
	drillDuration    = 10 * time.Second
	drillFaultAt     = 2 * time.Second
	drillPause       = 5 * time.Second
	drillClientLimit = "20s"
)

// TestFaultDrill injects, one at a time, the faults a mesh meets in
// production into a transparent-mode mesh under load, and counts the
// requests each one failed: none wherever a replica of the service
// remains, and for a killed proxy at most the requests on its connections.
// The figures are in docs/reliability.md.
func TestFaultDrill(t *testing.T) {
	requireTransparent(t)
	fortio := fortioBin(t)
	if l := leftovers(t); len(l) > 0 {
		t.Fatalf("leftovers before the test: %v", l)
	}
	// The data directory on a filesystem of its own, so that filling the
	// control plane's disk fills nothing else. The proxies and the
	// applications run unprivileged and must reach it.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := filepath.Join(base, "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustCmd(t, "mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "trellis-drill", dataDir)
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() })

	upArgs := []string{"--data-dir", dataDir, "up", "--network", "bridge", "--control-port", strconv.Itoa(freePort(t)), "--admin-addr", loopback(freePort(t))}
	up := startTrellis(t, -1, nil, upArgs...)
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	restartControlPlane := func(kill bool) {
		if kill {
			up.cmd.Process.Kill()
		} else if out, err := exec.Command(trellisBin, "--data-dir", dataDir, "down").CombinedOutput(); err != nil {
			t.Fatalf("trellis down: %v\n%s", err, out)
		}
		<-up.exited
		time.Sleep(time.Second) // the proxies run on their own meanwhile
		up = startTrellis(t, -1, nil, upArgs...)
		up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	}

	echoPort := freePort(t)
	startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "transparent", "--name", "echo", "--port", strconv.Itoa(echoPort),
		"--replicas", "2", "--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	waitEcho(t, dataDir)

	signal := func(sig syscall.Signal, process string) func() {
		return func() { echoProcess(t, process).Signal(sig) }
	}
	pause := func(process string) func() {
		return func() {
			p := echoProcess(t, process)
			p.Signal(syscall.SIGSTOP)
			time.Sleep(drillPause)
			p.Signal(syscall.SIGCONT)
		}
	}
	for _, f := range []struct {
		name   string
		inject func()
		// allowed is how many requests the fault may fail: those on the
		// killed proxy's connections at the moment it died.
		allowed int64
		// restarts: the fault ends the replica, which is restarted;
		// otherwise its processes are the same after the fault.
		restarts bool
	}{
		{"kill an application replica (SIGKILL)", signal(syscall.SIGKILL, "fortio"), 0, true},
		{"stop a proxy (SIGTERM)", signal(syscall.SIGTERM, "trellis-proxy"), 0, true},
		{"kill a proxy (SIGKILL)", signal(syscall.SIGKILL, "trellis-proxy"), drillConns, true},
		{"pause an application for 5 s", pause("fortio"), 0, false},
		{"pause a proxy for 5 s", pause("trellis-proxy"), 0, false},
		{"fill the control plane's disk for 5 s", func() { fillDisk(t, dataDir, drillPause) }, 0, false},
		{"restart the control plane (trellis down, up)", func() { restartControlPlane(false) }, 0, false},
		{"kill the control plane (kill -9) and start it again", func() { restartControlPlane(true) }, 0, false},
	} {
		restarts, pids := workloads(t, dataDir)["echo-1"].Metadata.Labels["trellis.dev/restarts"], echoPids(t)
		r := drillUnderLoad(t, fortio, dataDir, echoPort, f.inject)
		failed, total := r.failed(), r.DurationHistogram.Count
		t.Logf("%-52s failed %d of %d, p99 %.1f ms, max %.0f ms", f.name, failed, total, r.percentile(99)*1000, r.DurationHistogram.Max*1000)
		if failed > f.allowed {
			t.Errorf("%s: %d of %d requests failed (%v); at most %d may", f.name, failed, total, r.RetCodes, f.allowed)
		}
		waitEcho(t, dataDir)
		after := workloads(t, dataDir)["echo-1"].Metadata.Labels["trellis.dev/restarts"]
		if f.restarts && after == restarts {
			t.Errorf("%s: the replica was not restarted (restarts %q before and after)", f.name, after)
		}
		if now := echoPids(t); !f.restarts && now != pids {
			t.Errorf("%s: the replica's processes changed (%s before, %s after)", f.name, pids, now)
		}
	}
}

// drillUnderLoad runs one load and injects a fault drillFaultAt into it.
func drillUnderLoad(t *testing.T, fortio, dataDir string, echoPort int, inject func()) fortioReport {
	t.Helper()
	report := filepath.Join(t.TempDir(), "fortio.json")
	os.Chmod(filepath.Dir(report), 0o777) // the application runs unprivileged
	load := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "transparent", "--name", "load", "--port", strconv.Itoa(freePort(t)),
		"--restart", "never", "--upstream", "echo:"+strconv.Itoa(echoPort), "--", fortio, "load", "-quiet",
		"-qps", strconv.Itoa(drillQPS), "-c", strconv.Itoa(drillConns), "-t", drillDuration.String(), "-timeout", drillClientLimit,
		"-json", report, "http://$ECHO_ADDR/")
	load.waitOutput(t, regexp.MustCompile(`load-0: started`), 20*time.Second)
	time.Sleep(drillFaultAt)
	inject()
	select {
	case <-load.exited:
	case <-time.After(drillDuration + 60*time.Second):
		t.Fatal("the load did not finish")
	}
	r := readFortioReport(t, report, load)
	if n := r.DurationHistogram.Count; n < int64(drillDuration.Seconds()*drillQPS/2) {
		t.Errorf("only %d requests were sent in %v at %d rps", n, drillDuration, drillQPS)
	}
	return r
}

// waitEcho waits until both echo replicas are registered and serving
// again after a fault, and a moment more for discovery to tell the load.
func waitEcho(t *testing.T, dataDir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		wls := workloads(t, dataDir)
		_, a := wls["echo-0"]
		_, b := wls["echo-1"]
		if a && b && echoProcessOK("fortio") && echoProcessOK("trellis-proxy") {
			break
		}
		if time.Now().After(deadline) {
			_, errApp := netnsProcess(echoNetNS, "fortio")
			_, errProxy := netnsProcess(echoNetNS, "trellis-proxy")
			t.Fatalf("echo did not come back within 30s: %v; %v; %v", wls, errApp, errProxy)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	time.Sleep(2 * time.Second)
}

// echoNetNS is the instance the faults hit.
const echoNetNS = "trellis-default-echo-1"

// netnsProcess finds the process whose program is prog (fortio: the
// application; trellis-proxy: the proxy) in network namespace ns.
func netnsProcess(ns, prog string) (int, error) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return 0, err
	}
	var seen []string
	for _, f := range strings.Fields(string(out)) {
		b, _ := os.ReadFile("/proc/" + f + "/cmdline")
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if filepath.Base(argv0) == prog {
			return strconv.Atoi(f)
		}
		seen = append(seen, argv0)
	}
	return 0, fmt.Errorf("no %s process in %s (only %q)", prog, ns, seen)
}

// echoPids lists the processes in the faulted instance's namespace.
func echoPids(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", echoNetNS).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", echoNetNS, err)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

func echoProcessOK(prog string) bool {
	_, err := netnsProcess(echoNetNS, prog)
	return err == nil
}

func echoProcess(t *testing.T, prog string) *os.Process {
	t.Helper()
	pid, err := netnsProcess(echoNetNS, prog)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := os.FindProcess(pid)
	return p
}

// fillDisk fills the filesystem of dir, holds it full for d and frees it.
func fillDisk(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	name := filepath.Join(dir, "drill-fill")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(name)
	defer f.Close()
	for chunk := make([]byte, 1<<20); len(chunk) > 0; {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			chunk = chunk[:len(chunk)/2] // down to the last byte
		}
	}
	var st syscall.Statfs_t
	syscall.Statfs(dir, &st)
	t.Logf("disk full: %d bytes free", st.Bavail*uint64(st.Bsize))
	time.Sleep(d)
}
