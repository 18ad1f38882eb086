package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An application that runs already is meshed with --attach: the proxy
// says it waits for the application, and the instance joins its service
// once the application listens. A client-only workload (no --port) calls
// it through a pinned local port, registers without a service, and its
// calls show as an mTLS edge.
func TestAttachAndClientOnly(t *testing.T) {
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "none", "--control-port", "0",
		"--admin-addr", loopback(freePort(t)), "--metrics-scrape-interval", "1s")
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)

	appPort, localPort := freePort(t), freePort(t)
	legacy := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--attach", "--name", "legacy", "--port", strconv.Itoa(appPort))
	legacy.waitOutput(t, regexp.MustCompile(`legacy-0: nothing accepts connections on 127\.0\.0\.1:`+strconv.Itoa(appPort)+` yet; the instance joins service legacy once the application does`), 20*time.Second)
	time.Sleep(time.Second)
	if _, ok := workloads(t, dataDir)["legacy-0"]; ok {
		t.Fatal("legacy-0 registered before its application listened")
	}
	// The application, started by something else than trellis.
	app := exec.Command(fortio, "server", "-http-port", loopback(appPort), "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Process.Kill(); app.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if w, ok := workloads(t, dataDir)["legacy-0"]; ok && w.Spec.Service == "legacy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("legacy-0 did not register once its application listened")
		}
	}

	load := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--name", "loadgen", "--restart", "never",
		"--upstream", "legacy:"+strconv.Itoa(appPort)+"="+strconv.Itoa(localPort),
		"--", fortio, "load", "-qps", "50", "-t", "60s", "http://"+loopback(localPort)+"/")
	load.waitOutput(t, regexp.MustCompile(`loadgen-0: started \(explicit\)\n.*\n  address   127\.0\.0\.1 \(a client only: in no service\)`), 20*time.Second)
	if c, err := net.Dial("tcp", loopback(localPort)); err != nil {
		t.Fatalf("the pinned upstream port %d: %v", localPort, err)
	} else {
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if w, ok := workloads(t, dataDir)["loadgen-0"]; ok {
			if w.Spec.Service != "" {
				t.Fatalf("the client-only workload is in service %q", w.Spec.Service)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client-only workload never registered")
		}
	}
	edge := regexp.MustCompile(`(?m)^loadgen\s+legacy\s+.*√`)
	var out []byte
	for deadline := time.Now().Add(30 * time.Second); !edge.Match(out); time.Sleep(time.Second) {
		var err error
		if out, err = exec.Command(trellisBin, "--data-dir", dataDir, "edges").CombinedOutput(); err != nil {
			t.Fatalf("trellis edges: %v\n%s", err, out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mTLS edge loadgen → legacy within 30s:\n%s", out)
		}
	}
	if out, err := exec.Command(trellisBin, "--data-dir", dataDir, "stat", "deploy", "--from", "deploy/loadgen").CombinedOutput(); err != nil || !strings.Contains(string(out), "legacy") {
		t.Errorf("trellis stat deploy --from deploy/loadgen: %v\n%s", err, out)
	}
	load.interrupt(t, 20*time.Second)
	legacy.interrupt(t, 20*time.Second)
}
