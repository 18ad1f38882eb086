package run

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// udpChain holds the UDP policy of a transparent-mode instance.
const udpChain = "TRELLIS_UDP"

// refuseUDP makes UDP leaving the instance's namespace refused (ICMP port
// unreachable, so a sender sees ECONNREFUSED at once), except DNS to the
// control plane at dns: the mesh carries TCP only, and refusing is safer
// than sending UDP in plaintext behind the application's back
// (--allow-udp lets it pass). Loopback stays open. The rules go with the
// namespace, which trellis run owns, so they need no cleanup.
func (in *instance) refuseUDP(ctx context.Context, dns netip.Addr) error {
	rules := strings.Join([]string{
		"*filter",
		":" + udpChain + " - [0:0]",
		`-A OUTPUT -p udp -m comment --comment "trellis/udp" -j ` + udpChain,
		"-A " + udpChain + ` -o lo -m comment --comment "trellis/udp-loopback" -j RETURN`,
		"-A " + udpChain + " -d " + dns.String() + `/32 -p udp -m udp --dport 53 -m comment --comment "trellis/udp-dns" -j RETURN`,
		"-A " + udpChain + ` -m comment --comment "trellis/udp-refused (trellis run --allow-udp lets it pass)" -j REJECT --reject-with icmp-port-unreachable`,
		"COMMIT", "",
	}, "\n")
	args := in.ns.Exec("iptables-restore", "-w", "--noflush")
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("UDP rules in %s: %w: %s", in.ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
