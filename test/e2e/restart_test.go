package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// A replica whose application is killed is restarted (after the backoff's
// first second), and `trellis get workloads` says so: RESTARTS 1, last
// exit signal-killed; `trellis run` itself keeps running.
func TestKilledApplicationIsRestarted(t *testing.T) {
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "none", "--control-port", "0", "--admin-addr", loopback(freePort(t)))
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	port := freePort(t)
	run := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--mode", "explicit", "--name", "echo", "--port", strconv.Itoa(port),
		"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	run.waitOutput(t, regexp.MustCompile(`echo-0: started`), 20*time.Second)
	serving := func() bool {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/debug")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}
	for deadline := time.Now().Add(10 * time.Second); !serving(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the application never served")
		}
	}
	if out, err := exec.Command("pkill", "-KILL", "-f", "http-port 127.0.0.1:"+strconv.Itoa(port)).CombinedOutput(); err != nil {
		t.Fatalf("pkill: %v %s", err, out)
	}
	killed := time.Now()
	run.waitOutput(t, regexp.MustCompile(`echo-0: restarted \(restart 1; it last ended with signal-killed\)`), 20*time.Second)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		w, ok := workloads(t, dataDir)["echo-0"]
		if ok && w.Metadata.Labels["trellis.dev/restarts"] == "1" && w.Metadata.Labels["trellis.dev/last-exit"] == "signal-killed" && serving() {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(workloads(t, dataDir))
			t.Fatalf("the restarted replica is not registered with its restart: %s", b)
		}
	}
	t.Logf("the killed application served again %v later", time.Since(killed).Round(10*time.Millisecond))
	out, err := exec.Command(trellisBin, "--data-dir", dataDir, "get", "workloads", "-o", "wide").CombinedOutput()
	if err != nil || !regexp.MustCompile(`echo-0 .* 1 .* signal-killed`).Match(out) {
		t.Errorf("get workloads -o wide does not show the restart: %v\n%s", err, out)
	}
	select {
	case <-run.exited:
		t.Fatalf("trellis run exited: %v", run.err)
	default:
	}
}
