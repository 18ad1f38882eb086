package netns

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/spf13/pflag"
)

// DefaultNetwork is the bridge network; its first address is the bridge's.
var DefaultNetwork = netip.MustParsePrefix("10.239.0.0/16")

// BridgeNetwork is the bridge instances join in bridge mode and its
// network: one control plane per bridge, networks that overlap nothing.
type BridgeNetwork struct {
	Name string // the bridge interface; DefaultBridge if empty
	CIDR string // an IPv4 network; DefaultNetwork if empty
}

// Flags registers --bridge and --network-cidr.
func (b *BridgeNetwork) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&b.Name, "bridge", DefaultBridge, "bridge mode: the bridge interface instances join; each control plane on a host needs its own")
	fs.StringVar(&b.CIDR, "network-cidr", DefaultNetwork.String(), "bridge mode: the IPv4 network of the bridge (its first address) and its instances; must overlap no other network of the host")
}

// Args gives b back as the flags Flags registers.
func (b BridgeNetwork) Args() []string {
	return []string{"--bridge", cmp.Or(b.Name, DefaultBridge), "--network-cidr", cmp.Or(b.CIDR, DefaultNetwork.String())}
}

// Parse validates b and returns its name and network.
func (b BridgeNetwork) Parse() (string, netip.Prefix, error) {
	name, cidr := cmp.Or(b.Name, DefaultBridge), cmp.Or(b.CIDR, DefaultNetwork.String())
	if err := ValidLinkName(name); err != nil {
		return "", netip.Prefix{}, fmt.Errorf("--bridge %q: %w", name, err)
	}
	p, err := netip.ParsePrefix(cidr)
	switch {
	case err != nil:
		return "", netip.Prefix{}, fmt.Errorf("--network-cidr %q: not a network such as 10.239.0.0/16", cidr)
	case !p.Addr().Is4():
		return "", netip.Prefix{}, fmt.Errorf("--network-cidr %s: must be IPv4 (instances have no IPv6)", p)
	case p.Bits() < 8 || p.Bits() > 28:
		return "", netip.Prefix{}, fmt.Errorf("--network-cidr %s: the prefix length must be between /8 and /28", p)
	case p != p.Masked():
		return "", netip.Prefix{}, fmt.Errorf("--network-cidr %s: host bits are set; did you mean %s?", p, p.Masked())
	}
	return name, p, nil
}
