package kube

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/web/webtest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// dashboardShowsTheDemo runs `trellis dashboard` against the cluster (it
// serves the dashboard on loopback through a port-forward to the
// destination service's read-only API) and checks in headless Chromium
// that the topology shows the demo in ns, every edge mutual TLS. Both stop
// when it returns.
func dashboardShowsTheDemo(t *testing.T, ns string) {
	t.Helper()
	t.Run("dashboard", func(t *testing.T) { dashboardTopology(t, ns) })
}

func dashboardTopology(t *testing.T, ns string) {
	cmd := exec.Command(trellisBin, "dashboard", "--kubeconfig", kubeconfig, "--address", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("trellis dashboard did not stop on SIGINT within 10s")
		}
	})
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			select {
			case lines <- s.Text():
			default:
			}
		}
	}()
	var url string
	select {
	case url = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("trellis dashboard printed no URL within 60s: %s", stderr.String())
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.Contains(url, "/?token=") {
		t.Fatalf("trellis dashboard printed %q, want its URL on loopback (stderr: %s)", url, stderr.String())
	}
	b := webtest.Open(t, url)
	b.Go("#/topology?ns=" + ns)
	b.WaitFor("the demo's three edges, all mTLS, in the cluster's topology",
		`[...document.querySelectorAll("g.edge")].filter((e) => e.dataset.mtls === "true").length === 3`, 60*time.Second)
	t.Logf("trellis dashboard at %s shows the cluster's topology", strings.Split(url, "?")[0])
}
