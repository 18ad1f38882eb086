package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// privateEnv marks the re-executed test running in network and mount
// namespaces of its own, where the links it makes are nobody else's (the
// end-to-end tests look for leftovers named like them on the host).
const privateEnv = "TRELLIS_NETNS_TEST_PRIVATE"

// TestBridgeKeepsItsAddress joins namespaces to a bridge one by one: the
// bridge's MAC must never change (a namespace that resolved the gateway
// before a join would otherwise send to an address nobody answers for),
// and every namespace reaches a listener on the gateway.
func TestBridgeKeepsItsAddress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces")
	}
	if os.Getenv(privateEnv) == "" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skipf("skipping: %v", err)
		}
		// A fresh sysfs shows the new network namespace's links.
		cmd := exec.CommandContext(t.Context(), "unshare", "--net", "--mount", "sh", "-c",
			`mount -t sysfs sysfs /sys && exec "$0" -test.run='^TestBridgeKeepsItsAddress$' -test.v`, os.Args[0])
		cmd.Env = append(os.Environ(), privateEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a private network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("the test failed in its network namespace: %v", err)
		}
		return
	}

	ctx := t.Context()
	const bridge = "nstest0"
	gw := netip.MustParsePrefix("10.250.0.1/24")
	if _, err := EnsureBridge(ctx, bridge, gw, t.TempDir()); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	// Cleanups run after t.Context is cancelled.
	t.Cleanup(func() { DeleteBridge(context.Background(), bridge) })
	mac := func() string {
		b, err := os.ReadFile("/sys/class/net/" + bridge + "/address")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	want := mac()
	gateway := testkit.ServeOn(t, net.JoinHostPort(gw.Addr().String(), "0"), func(net.Conn) {}) // accepted, closed

	var spaces []Namespace
	for i := range 4 {
		n := Namespace{
			Name: fmt.Sprintf("nstest-%d-%d", os.Getpid(), i), Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, 0, byte(2 + i)}), 24),
			Gateway: gw.Addr(), Bridge: bridge, Search: []string{"cluster.local"},
		}
		if err := n.Create(ctx); err != nil {
			t.Fatalf("creating %s: %v", n.Name, err)
		}
		t.Cleanup(func() {
			if err := n.Delete(context.Background()); err != nil {
				t.Errorf("deleting %s: %v", n.Name, err)
			}
		})
		spaces = append(spaces, n)
		if got := mac(); got != want {
			t.Fatalf("the bridge's MAC changed from %s to %s when %s joined", want, got, n.Name)
		}
	}
	for _, n := range spaces {
		argv := n.Exec("timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+strings.ReplaceAll(gateway, ":", "/"))
		start := time.Now()
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s cannot connect to %s: %v: %s", n.Name, gateway, err, out)
		} else {
			t.Logf("%s connected to the gateway in %v", n.Name, time.Since(start).Round(time.Millisecond))
		}
	}
	if b, err := os.ReadFile("/etc/netns/" + spaces[0].Name + "/resolv.conf"); err != nil || !strings.Contains(string(b), "nameserver 10.250.0.1\n") {
		t.Errorf("resolv.conf: %q, %v", b, err)
	}
}
