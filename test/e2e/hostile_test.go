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

	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// An application meshed in transparent mode cannot own the mesh: started
// by root's `trellis run`, it runs as nobody with no capabilities, and
// everything a compromised application would try is refused — reading the
// issuer's and the join-token signing keys or another instance's join
// token, minting a join token on the control plane's API socket, reading
// or rewriting its interception rules, becoming the proxy's user, or
// reaching other instances over IPv6 (link-local, around the proxies) —
// and a compromised proxy cannot become another workload.
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

	// Nor can a compromised proxy become another workload: every proxy
	// runs as a user of its own, the victim's single-use join token was
	// spent and removed once its proxy was ready, and one proxy cannot
	// signal another.
	victimProxy, err := netnsProcess("trellis-default-victim-0", "trellis-proxy")
	if err != nil {
		t.Fatal(err)
	}
	attackerProxy, err := netnsProcess("trellis-default-attacker-0", "trellis-proxy")
	if err != nil {
		t.Fatal(err)
	}
	victimUID, attackerUID := processUID(t, victimProxy), processUID(t, attackerProxy)
	if victimUID == attackerUID {
		t.Fatalf("both proxies run as user %s", victimUID)
	}
	token := filepath.Join(dataDir, "run", "default-victim-0", "token")
	if _, err := os.Stat(token); !os.IsNotExist(err) {
		t.Errorf("the victim's join token is still on disk after its proxy started: %v", err)
	}
	// UDP does not leave an instance in plaintext (only DNS to the control
	// plane does; trellis run --allow-udp lets it pass): a datagram from
	// the host reaches the victim, one from the attacker does not.
	var sink net.PacketConn
	if err := InNetNS("trellis-default-victim-0", func() (err error) { sink, err = net.ListenPacket("udp4", ":9999"); return err }); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if !udpReaches(t, "", victimIP+":9999", sink) {
		t.Fatal("UDP from the host does not reach the victim's namespace: the check below would prove nothing")
	}
	if udpReaches(t, "trellis-default-attacker-0", victimIP+":9999", sink) {
		t.Error("UDP from the attacker's instance reached the victim in plaintext")
	}
	for name, cmd := range map[string]string{
		"listing the victim proxy's files": "ls " + filepath.Dir(token),
		"signalling the victim's proxy":    "kill -STOP " + strconv.Itoa(victimProxy),
	} {
		out, err := exec.Command("setpriv", "--reuid="+attackerUID, "--regid="+attackerUID, "--clear-groups", "sh", "-c", cmd).CombinedOutput()
		if err == nil {
			t.Errorf("as the attacker's proxy (user %s), %s succeeded: %s", attackerUID, name, out)
		}
	}
}

// udpReaches reports whether a UDP datagram sent from network namespace
// from ("" for the host's) to addr reached sink.
func udpReaches(t *testing.T, from, addr string, sink net.PacketConn) bool {
	t.Helper()
	send := func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.Write([]byte("plaintext " + from))
		return nil
	}
	var err error
	if from == "" {
		err = send()
	} else {
		err = InNetNS(from, send)
	}
	if err != nil {
		t.Fatalf("sending UDP from %q: %v", from, err)
	}
	buf := make([]byte, 64)
	sink.SetReadDeadline(time.Now().Add(time.Second))
	n, _, err := sink.ReadFrom(buf)
	return err == nil && string(buf[:n]) == "plaintext "+from
}

// processUID is the real user ID pid runs as.
func processUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no Uid in /proc/%d/status", pid)
	}
	return string(m[1])
}
