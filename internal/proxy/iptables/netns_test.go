package iptables

// Real tests: each mode gets a fresh network namespace ("ns", the one
// intercepted) joined by a veth pair to a peer namespace that plays the
// rest of the network. Probes are helper processes — this test binary
// re-executed inside a namespace, see TestMain — so a connection that is
// not redirected reaches the peer and is refused at once: no probe waits
// on a timeout.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

const helperEnv = "TRELLIS_IPTABLES_TEST_HELPER" // "listen" or "dial"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "listen":
		os.Exit(listenHelper(os.Getenv("PROBE_NETWORK"), os.Getenv("PROBE_ADDR")))
	case "dial":
		os.Exit(dialHelper(os.Getenv("PROBE_ADDR"), os.Getenv("PROBE_UID")))
	}
	os.Exit(m.Run())
}

// listenHelper accepts connections and prints, per connection, the
// destination the client originally dialled (SO_ORIGINAL_DST).
func listenHelper(network, addr string) int {
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		// The proxy's own SO_ORIGINAL_DST reader, so this also tests it.
		orig, redirected, err := transport.OriginalDst(c)
		switch {
		case err != nil:
			fmt.Println("error:", err)
		case !redirected:
			fmt.Println("error: not redirected")
		default:
			fmt.Println("accepted", orig)
		}
		c.Close()
	}
}

// dialHelper connects to addr, as user uid if set, and prints "connected",
// "refused" or the error.
func dialHelper(addr, uid string) int {
	if uid != "" {
		n, _ := strconv.Atoi(uid)
		if err := syscall.Setuid(n); err != nil {
			fmt.Println("error: setuid:", err)
			return 1
		}
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	switch {
	case err == nil:
		c.Close()
		fmt.Println("connected")
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Println("refused")
	default:
		fmt.Println("error:", err)
	}
	return 0
}

func TestRealNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and program iptables")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("skipping: iproute2 'ip' not found: %v", err)
	}
	for _, mode := range []string{ModeNFT, ModeLegacy} {
		t.Run(mode, func(t *testing.T) {
			for _, v6 := range []bool{false, true} {
				for _, suffix := range []string{"-save", "-restore"} {
					if _, err := exec.LookPath(tool(mode, v6, suffix)); err != nil {
						t.Skipf("skipping: %v", err)
					}
				}
			}
			testRealMode(t, mode)
		})
	}
}

func testRealMode(t *testing.T, mode string) {
	ns, peer := newTopology(t)
	r := &countingRunner{Runner: ExecRunner{NetNS: ns}}

	cfg := DefaultConfig()
	cfg.Mode = mode
	cfg.IPv6 = true
	cfg.SkipInboundPorts = []string{"22", "8000:8010"}
	cfg.SkipOutboundPorts = []string{"7000"}
	cfg.SkipSubnets = []string{"10.78.0.0/16", "fd78::/16"}

	// Someone else's rules, which must come through untouched.
	for _, v6 := range []bool{false, true} {
		foreign := "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p udp -j RETURN\n-A PREROUTING -p udp -j FOREIGN\n-A OUTPUT -p udp -j RETURN\nCOMMIT\n"
		mustRun(t, r, tool(mode, v6, "-restore"), []string{"--noflush"}, foreign)
	}
	before := [2]string{natRules(t, r, mode, false), natRules(t, r, mode, true)}

	if err := Install(t.Context(), cfg, r); err != nil {
		t.Fatalf("Install: %v", err)
	}
	installed := [2]string{natRules(t, r, mode, false), natRules(t, r, mode, true)}
	for i, v6 := range []bool{false, true} {
		subnet := map[bool]string{false: "10.78.0.0/16", true: "fd78::/16"}[v6]
		for _, want := range []string{
			`-A PREROUTING -p udp -j FOREIGN`,
			`-A PREROUTING -m comment --comment "trellis/inbound" -j TRELLIS_INBOUND`,
			`-A OUTPUT -m comment --comment "trellis/outbound" -j TRELLIS_OUTPUT`,
			`-A TRELLIS_INBOUND -p tcp -m tcp --dport 22 -m comment --comment "trellis/skip-inbound-port" -j RETURN`,
			`-A TRELLIS_INBOUND -p tcp -m tcp --dport 8000:8010 -m comment --comment "trellis/skip-inbound-port" -j RETURN`,
			`-A TRELLIS_INBOUND -p tcp -m comment --comment "trellis/redirect-inbound" -j REDIRECT --to-ports 4143`,
			`-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -m comment --comment "trellis/skip-proxy-uid" -j RETURN`,
			`-A TRELLIS_OUTPUT -o lo -m comment --comment "trellis/skip-loopback" -j RETURN`,
			`-A TRELLIS_OUTPUT -p tcp -m tcp --dport 7000 -m comment --comment "trellis/skip-outbound-port" -j RETURN`,
			`-A TRELLIS_OUTPUT -d ` + subnet + ` -m comment --comment "trellis/skip-subnet" -j RETURN`,
			`-A TRELLIS_OUTPUT -p tcp -m comment --comment "trellis/redirect-outbound" -j REDIRECT --to-ports 4140`,
		} {
			if !strings.Contains(installed[i], want+"\n") {
				t.Errorf("ipv6=%v: nat table lacks %q:\n%s", v6, want, installed[i])
			}
		}
	}

	// Idempotent: the second Install finds everything in place (so the
	// rules we generate match what iptables-save prints) and writes nothing.
	r.reset()
	if err := Install(t.Context(), cfg, r); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if n := r.restoreCount(); n != 0 {
		t.Errorf("second Install ran iptables-restore %d times, want 0", n)
	}
	if again := [2]string{natRules(t, r, mode, false), natRules(t, r, mode, true)}; again != installed {
		t.Errorf("second Install changed the rules:\nbefore:\n%s\nafter:\n%s", installed, again)
	}

	t.Run("traffic", func(t *testing.T) { testTraffic(t, ns, peer) })

	// Cleanup with mode auto must find the backend Install used.
	cfg.Mode = ModeAuto
	if err := Cleanup(t.Context(), cfg, r); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if after := [2]string{natRules(t, r, mode, false), natRules(t, r, mode, true)}; after != before {
		t.Errorf("Cleanup did not restore the nat table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	r.reset()
	if err := Cleanup(t.Context(), cfg, r); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	if n := r.restoreCount(); n != 0 {
		t.Errorf("second Cleanup ran iptables-restore %d times, want 0", n)
	}
}

// testTraffic checks where real connections go with the rules installed.
func testTraffic(t *testing.T, ns, peer string) {
	listeners := map[string]*listener{}
	for _, l := range []struct{ name, network, addr string }{
		{"out4", "tcp4", "0.0.0.0:4140"}, {"out6", "tcp6", "[::]:4140"},
		{"in4", "tcp4", "0.0.0.0:4143"}, {"in6", "tcp6", "[::]:4143"},
	} {
		listeners[l.name] = startListener(t, ns, l.network, l.addr)
	}
	tests := []struct {
		name     string
		from     string // namespace the client runs in
		addr     string
		uid      string
		listener string // where it must be redirected; "" means not at all
	}{
		{"outbound redirected", ns, "10.77.0.2:80", "", "out4"},
		{"outbound ipv6 redirected", ns, "[fd77::2]:80", "", "out6"},
		{"outbound skip port", ns, "10.77.0.2:7000", "", ""},
		{"outbound skip subnet", ns, "10.78.0.2:80", "", ""},
		{"outbound skip ipv6 subnet", ns, "[fd78::2]:80", "", ""},
		{"outbound from proxy uid", ns, "10.77.0.2:80", "2102", ""},
		{"outbound loopback", ns, "127.0.0.1:9", "", ""},
		{"outbound to own address", ns, "10.77.0.1:9", "", ""},
		{"inbound redirected", peer, "10.77.0.1:80", "", "in4"},
		{"inbound ipv6 redirected", peer, "[fd77::1]:80", "", "in6"},
		{"inbound skip port", peer, "10.77.0.1:22", "", ""},
		{"inbound skip range", peer, "10.77.0.1:8005", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := helper(t, tt.from, "dial", "PROBE_ADDR="+tt.addr, "PROBE_UID="+tt.uid)
			if tt.listener == "" {
				// Not redirected: it reached the real destination, which
				// has no listener.
				if got != "refused" {
					t.Errorf("dial %s: %q, want refused (not redirected)", tt.addr, got)
				}
				return
			}
			if got != "connected" {
				t.Fatalf("dial %s: %q, want connected (redirected)", tt.addr, got)
			}
			if line := listeners[tt.listener].next(t); line != "accepted "+tt.addr {
				t.Errorf("listener %s: %q, want %q", tt.listener, line, "accepted "+tt.addr)
			}
		})
	}
	for name, l := range listeners {
		if extra := l.drain(); len(extra) > 0 {
			t.Errorf("listener %s got unexpected connections: %q", name, extra)
		}
	}
}

// newTopology creates ns and peer, linked by veth tv0 (in ns) <-> tv1 (in
// peer), and deletes both when the test ends. The names must not start
// with "trellis-": local mode removes such namespaces as its leftovers.
func newTopology(t *testing.T) (ns, peer string) {
	b := make([]byte, 4)
	rand.Read(b)
	ns = "ipt-test-" + hex.EncodeToString(b)
	peer = ns + "-peer"
	for _, name := range []string{ns, peer} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	for _, args := range []string{
		ns + " link add tv0 type veth peer name tv1 netns " + peer,
		ns + " link set lo up", ns + " link set tv0 up",
		peer + " link set lo up", peer + " link set tv1 up",
		ns + " addr add 10.77.0.1/24 dev tv0", ns + " addr add 10.78.0.1/16 dev tv0",
		ns + " addr add fd77::1/64 dev tv0 nodad", ns + " addr add fd78::1/64 dev tv0 nodad",
		peer + " addr add 10.77.0.2/24 dev tv1", peer + " addr add 10.78.0.2/16 dev tv1",
		peer + " addr add fd77::2/64 dev tv1 nodad", peer + " addr add fd78::2/64 dev tv1 nodad",
	} {
		argv := append([]string{"-n"}, strings.Fields(args)...)
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	return ns, peer
}

// helper runs this test binary in namespace ns in the given mode and
// returns its one line of output.
func helper(t *testing.T, ns, mode string, env ...string) string {
	cmd := helperCmd(t, ns, mode, env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s helper in %s: %v: %s", mode, ns, err, out)
	}
	return strings.TrimSpace(string(out))
}

func helperCmd(t *testing.T, ns, mode string, env ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "ip", "netns", "exec", ns, self)
	// Under -race, a process otherwise sleeps 1s on exit (atexit_sleep_ms).
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+mode, "GORACE="+gorace)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// listener is a running listen helper and the lines it has printed.
type listener struct{ lines chan string }

func startListener(t *testing.T, ns, network, addr string) *listener {
	cmd := helperCmd(t, ns, "listen", "PROBE_NETWORK="+network, "PROBE_ADDR="+addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{lines: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	if line := l.next(t); line != "ready" {
		t.Fatalf("listener %s %s: %q", network, addr, line)
	}
	return l
}

// next returns the listener's next line, failing if none comes soon.
func (l *listener) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-l.lines:
		if !ok {
			t.Fatal("listener exited")
		}
		return line
	case <-time.After(10 * time.Second):
		t.Fatal("listener printed nothing in 10s")
		return ""
	}
}

// drain returns the lines already printed and not yet read.
func (l *listener) drain() []string {
	var out []string
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				return out
			}
			out = append(out, line)
		default:
			return out
		}
	}
}

// countingRunner counts iptables-restore calls.
type countingRunner struct {
	Runner
	mu       sync.Mutex
	restores int
}

func (c *countingRunner) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, []byte, error) {
	if strings.HasSuffix(name, "-restore") {
		c.mu.Lock()
		c.restores++
		c.mu.Unlock()
	}
	return c.Runner.Run(ctx, name, args, stdin)
}

func (c *countingRunner) reset() { c.mu.Lock(); c.restores = 0; c.mu.Unlock() }

func (c *countingRunner) restoreCount() int { c.mu.Lock(); defer c.mu.Unlock(); return c.restores }

func mustRun(t *testing.T, r Runner, name string, args []string, stdin string) string {
	t.Helper()
	out, err := run(t.Context(), r, name, args, []byte(stdin))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// natRules is `iptables-save -t nat` without its '#' comment lines.
func natRules(t *testing.T, r Runner, mode string, v6 bool) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.SplitAfter(mustRun(t, r, tool(mode, v6, "-save"), []string{"-t", "nat"}, ""), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}
