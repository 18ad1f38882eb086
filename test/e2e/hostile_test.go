package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// An application meshed in transparent mode cannot own the mesh: started
// by root's `trellis run`, it runs as nobody with no capabilities, and
// everything a compromised application would try is refused — reading the
// issuer's and the join-token signing keys or another instance's join
// token, minting a join token on the control plane's API socket, reading
// or rewriting its interception rules, becoming the proxy's user, or
// reaching other instances over IPv6 (link-local, around the proxies).
func TestHostileApplicationCannotOwnTheMesh(t *testing.T) {
	requireTransparent(t)
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil { // the proxies' own user reaches its files
		t.Fatal(err)
	}
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "bridge", "--control-port", strconv.Itoa(freePort(t)),
		"--admin-addr", loopback(freePort(t)))
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	victim := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--name", "victim", "--port", "8080",
		"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled")
	victim.waitOutput(t, regexp.MustCompile(`victim-0: started`), 20*time.Second)

	victimIP := ""
	for deadline := time.Now().Add(20 * time.Second); victimIP == ""; time.Sleep(50 * time.Millisecond) {
		victimIP = workloads(t, dataDir)["victim-0"].Spec.Address
		if time.Now().After(deadline) {
			t.Fatal("the victim never registered")
		}
	}
	try := func(name, cmd string) string {
		return cmd + ` >/dev/null 2>&1 && echo "ATTACK ` + name + `: succeeded" || echo "ATTACK ` + name + `: refused"; `
	}
	script := `echo "USER $(id -u):$(id -g) CAPS $(grep CapEff /proc/self/status | tr -d '\t')"; ` +
		try("issuer key", "cat "+filepath.Join(dataDir, "issuer-key.pem")) +
		try("trust anchor key", "cat "+filepath.Join(dataDir, "trust-anchor-key.pem")) +
		try("join-token signing key", "cat "+filepath.Join(dataDir, "join-token-key.pem")) +
		try("victim's join token", "cat "+filepath.Join(dataDir, "run", "default-victim-0", "token")) +
		try("join token from the API socket", "curl -sf --unix-socket "+filepath.Join(dataDir, "api.sock")+
			` -X POST -d '{"identity":"spiffe://cluster.local/ns/default/sa/victim"}' http://trellis/v1/join-tokens`) +
		try("reading interception rules", "iptables -t nat -S") +
		try("removing interception rules", "iptables -t nat -F") +
		try("becoming the proxy's user", "setpriv --reuid=2102 --regid=2102 --clear-groups true") +
		try("an IPv6 address around the proxies", "ip -6 addr show | grep -q inet6") +
		// Not an attack: a call to the victim's own address, which must be
		// mTLS between the proxies like a call to its service.
		`curl -s -o /dev/null http://` + victimIP + `:8080/debug; echo DONE; exec sleep 600`
	attacker := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--name", "attacker", "--port", "8081", "--", "/bin/sh", "-c", script)
	attacker.waitOutput(t, regexp.MustCompile(`DONE`), 30*time.Second)
	out := attacker.out.String()
	t.Logf("the application's attempts:\n%s", strings.Join(regexp.MustCompile(`(?m)^.*(USER|ATTACK).*$`).FindAllString(out, -1), "\n"))
	if !regexp.MustCompile(`USER 65534:65534 CAPS CapEff:0+\b`).MatchString(out) {
		t.Errorf("the application does not run as nobody without capabilities:\n%s", out)
	}
	if n := strings.Count(out, ": refused"); n != 9 || strings.Contains(out, ": succeeded") {
		t.Errorf("%d of 9 attempts refused:\n%s", n, out)
	}
	// The call to the victim's address reached it over mTLS, from the
	// attacker's identity; nothing reached it in plaintext.
	m := metricstest.Scrape(t, "http://"+victimIP+":4191/metrics")
	in := map[string]string{"direction": "inbound"}
	mtls := m.Sum("request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": "spiffe://cluster.local/ns/default/sa/attacker"})
	if all := m.Sum("request_total", in); mtls < 1 || all != mtls {
		t.Errorf("the victim's proxy saw %v inbound requests, %v of them mTLS from the attacker's identity", all, mtls)
	}
	// Who an application runs as is in plain view (the attacker, which
	// never listens on its port, is not registered).
	wide, err := exec.Command(trellisBin, "--data-dir", dataDir, "get", "workloads", "-o", "wide").CombinedOutput()
	if err != nil || !regexp.MustCompile(`victim-0 .* nobody\(65534\)`).Match(wide) {
		t.Errorf("get workloads -o wide does not show the victim's application as nobody(65534): %v\n%s", err, wide)
	}
	t.Logf("trellis get workloads -o wide:\n%s", wide)
}
