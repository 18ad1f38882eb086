package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Two bridge-mode control planes run side by side, each with its own
// bridge and network, and an instance of the same name on each: both
// serve, in namespaces and as proxy users of their own. A third control
// plane whose bridge or network clashes with theirs is refused, naming
// what it clashes with.
func TestControlPlanesSideBySide(t *testing.T) {
	requireTransparent(t)
	fortio := fortioBin(t)
	planes := []struct{ bridge, cidr, dataDir, netns string }{
		{"trellis0", "10.239.0.0/16", t.TempDir(), "trellis-default-web-0"},
		{"trellis9", "10.238.0.0/16", t.TempDir(), "trellis-trellis9-default-web-0"},
	}
	uids := map[string]bool{}
	for _, p := range planes {
		if err := os.Chmod(filepath.Dir(p.dataDir), 0o711); err != nil {
			t.Fatal(err)
		}
		up := startTrellis(t, -1, nil, "--data-dir", p.dataDir, "up", "--network", "bridge", "--bridge", p.bridge, "--network-cidr", p.cidr,
			"--control-port", strconv.Itoa(freePort(t)), "--admin-addr", loopback(freePort(t)))
		up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
		r := startTrellis(t, -1, nil, "--data-dir", p.dataDir, "run", "--name", "web", "--port", "8080",
			"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
			"-tcp-port", "disabled", "-udp-port", "disabled")
		r.waitOutput(t, regexp.MustCompile(`web-0: started`), 20*time.Second)
		var web workload
		for deadline := time.Now().Add(20 * time.Second); web.Spec.Address == ""; time.Sleep(50 * time.Millisecond) {
			if web = workloads(t, p.dataDir)["web-0"]; time.Now().After(deadline) {
				t.Fatalf("%s: web-0 never registered", p.bridge)
			}
		}
		prefix := strings.TrimSuffix(p.cidr, "0.0/16")
		if !strings.HasPrefix(web.Spec.Address, prefix) {
			t.Errorf("%s: web-0 is at %s, not in %s", p.bridge, web.Spec.Address, p.cidr)
		}
		if err := get(http.DefaultClient, "http://"+web.Spec.Address+":8080/"); err != nil {
			t.Errorf("%s: web-0: %v", p.bridge, err)
		}
		pid, err := netnsProcess(p.netns, "trellis-proxy")
		if err != nil {
			t.Fatalf("%s: the proxy in %s: %v", p.bridge, p.netns, err)
		}
		uids[processUID(t, pid)] = true
	}
	if len(uids) != 2 {
		t.Errorf("the two proxies run as users %v: want one each", uids)
	}

	for _, tc := range []struct{ bridge, cidr, want string }{
		{"trellis8", "10.238.128.0/17", `network 10.238.128.0/17 overlaps 10.238.0.1/16 on trellis9 \(the bridge of the control plane of ` + regexp.QuoteMeta(planes[1].dataDir) + `\): choose another with --network-cidr`},
		{"trellis8", "11.239.0.0/16", `network 11.239.0.0/16 overlaps 10.239.0.1/16 on trellis0`},
		{"trellis9", "10.237.0.0/16", `bridge trellis9 is in use by process \d+ \(the control plane of ` + regexp.QuoteMeta(planes[1].dataDir) + `\)`},
		{"trellis8", "10.240.0.0/16", `overlaps the services' virtual addresses`},
		{"trellis-bridge-0", "10.236.0.0/16", `--bridge "trellis-bridge-0": an interface name has 1 to 15 characters`},
	} {
		p := startTrellis(t, -1, nil, "--data-dir", t.TempDir(), "up", "--network", "bridge", "--bridge", tc.bridge, "--network-cidr", tc.cidr,
			"--control-port", strconv.Itoa(freePort(t)), "--admin-addr", loopback(freePort(t)))
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("--bridge %s --network-cidr %s: still running, want a refusal", tc.bridge, tc.cidr)
		}
		if p.err == nil || !regexp.MustCompile(tc.want).MatchString(p.out.String()) {
			t.Errorf("--bridge %s --network-cidr %s: exit %v, output %q; want %q", tc.bridge, tc.cidr, p.err, p.out.String(), tc.want)
		}
	}
	if _, err := os.Stat("/sys/class/net/trellis8"); err == nil {
		t.Error("a refused control plane left bridge trellis8 behind")
	}
}
