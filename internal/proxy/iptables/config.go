package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// Defaults for Config, matching the ports and UID the proxy uses.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultProxyUID     = 2102
	DefaultMode         = ModeAuto
)

// Modes select which iptables backend programs the rules.
const (
	// ModeAuto picks a backend at run time; see Install for the rule.
	ModeAuto = "auto"
	// ModeNFT uses iptables-nft (the nf_tables kernel API).
	ModeNFT = "nft"
	// ModeLegacy uses iptables-legacy (the x_tables kernel API).
	ModeLegacy = "legacy"
)

// Config describes the interception rules. Build it with DefaultConfig or
// BindFlags, then call Validate before use (Install and Cleanup do).
type Config struct {
	// InboundPort is the proxy's inbound listener; TCP arriving at the
	// namespace from outside is redirected to it.
	InboundPort int
	// OutboundPort is the proxy's outbound listener; TCP the application
	// opens to anything but loopback is redirected to it.
	OutboundPort int
	// ProxyUID is the user ID the proxy runs as. Its own connections are
	// never redirected, which is what keeps the proxy from looping into
	// itself. It must not be 0: every root process would bypass the proxy.
	ProxyUID int
	// SkipInboundPorts are destination ports (e.g. "4567") or inclusive
	// ranges ("8000:8010" or "8000-8010") whose inbound TCP bypasses the
	// proxy.
	SkipInboundPorts []string
	// SkipOutboundPorts are destination ports or ranges, as for
	// SkipInboundPorts, whose outbound TCP bypasses the proxy.
	SkipOutboundPorts []string
	// SkipSubnets are destination CIDRs ("10.0.0.0/8", "fd00::/8") whose
	// outbound traffic bypasses the proxy. Each goes to the iptables of its
	// own family; IPv6 ones are ignored when IPv6 is false, since IPv6
	// traffic is then not intercepted at all.
	SkipSubnets []string
	// Mode is the iptables backend: "nft" (iptables-nft), "legacy"
	// (iptables-legacy) or "auto". Auto drops a backend whose save command
	// fails (binary or kernel support missing), then prefers the one that
	// already holds the Trellis chains, then the one holding more rules,
	// and otherwise nft, so it follows whatever the host already uses.
	Mode string
	// IPv6 also programs the same rules with ip6tables.
	IPv6 bool
}

// DefaultConfig returns a Config with every field at its default.
func DefaultConfig() Config {
	return Config{
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		ProxyUID:     DefaultProxyUID,
		Mode:         DefaultMode,
	}
}

// BindFlags registers one flag per field on fs, with the defaults of
// DefaultConfig (so it overwrites the fields of c).
func (c *Config) BindFlags(fs *pflag.FlagSet) {
	fs.IntVar(&c.InboundPort, "inbound-port", DefaultInboundPort,
		"port of the proxy's inbound listener; inbound TCP is redirected to it")
	fs.IntVar(&c.OutboundPort, "outbound-port", DefaultOutboundPort,
		"port of the proxy's outbound listener; outbound TCP is redirected to it")
	fs.IntVar(&c.ProxyUID, "proxy-uid", DefaultProxyUID,
		"user ID the proxy runs as; its own traffic is never redirected (prevents loops)")
	fs.StringSliceVar(&c.SkipInboundPorts, "skip-inbound-ports", nil,
		"inbound destination ports or ranges that bypass the proxy, e.g. 22,8000:8010")
	fs.StringSliceVar(&c.SkipOutboundPorts, "skip-outbound-ports", nil,
		"outbound destination ports or ranges that bypass the proxy, e.g. 443,8000:8010")
	fs.StringSliceVar(&c.SkipSubnets, "skip-subnets", nil,
		"outbound destination CIDRs that bypass the proxy, e.g. 10.0.0.0/8,fd00::/8")
	fs.StringVar(&c.Mode, "mode", DefaultMode,
		`iptables backend: "nft", "legacy", or "auto" (the one that already has rules, else nft)`)
	fs.BoolVar(&c.IPv6, "ipv6", false,
		"also program the rules with ip6tables")
}

// Validate reports every invalid setting, each error naming its flag.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: "+format, append([]any{flag}, args...)...))
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"inbound-port", c.InboundPort}, {"outbound-port", c.OutboundPort}} {
		if p.port < 1 || p.port > 65535 {
			bad(p.flag, "port %d is not in 1-65535", p.port)
		}
	}
	if c.InboundPort == c.OutboundPort {
		bad("outbound-port", "must differ from --inbound-port (both are %d)", c.InboundPort)
	}
	if c.ProxyUID < 1 || int64(c.ProxyUID) > 1<<32-2 {
		bad("proxy-uid", "%d is not a valid non-root user ID", c.ProxyUID)
	}
	for _, s := range c.SkipInboundPorts {
		if _, err := ParsePortRange(s); err != nil {
			bad("skip-inbound-ports", "%v", err)
		}
	}
	for _, s := range c.SkipOutboundPorts {
		if _, err := ParsePortRange(s); err != nil {
			bad("skip-outbound-ports", "%v", err)
		}
	}
	for _, s := range c.SkipSubnets {
		if _, err := netip.ParsePrefix(strings.TrimSpace(s)); err != nil {
			bad("skip-subnets", "%q is not a CIDR: %v", s, err)
		}
	}
	switch c.Mode {
	case ModeAuto, ModeNFT, ModeLegacy:
	default:
		bad("mode", "%q is not one of %q, %q, %q", c.Mode, ModeAuto, ModeNFT, ModeLegacy)
	}
	return errors.Join(errs...)
}

// PortRange is an inclusive range of TCP ports; First == Last for one port.
type PortRange struct {
	First, Last uint16
}

// String formats r the way iptables takes it: "4567" or "8000:8010".
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d:%d", r.First, r.Last)
}

// ParsePortRange parses one port ("4567") or inclusive range ("8000:8010",
// or "8000-8010" as Kubernetes annotations often write it).
func ParsePortRange(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	first, last, isRange := strings.Cut(s, ":")
	if !isRange {
		first, last, isRange = strings.Cut(s, "-")
	}
	if !isRange {
		last = first
	}
	lo, err := parsePort(first)
	if err != nil {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, err)
	}
	hi, err := parsePort(last)
	if err != nil {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, err)
	}
	if lo > hi {
		return PortRange{}, fmt.Errorf("port range %q: first port is after last", s)
	}
	return PortRange{First: lo, Last: hi}, nil
}

// ParsePorts parses a comma-separated list of ports and ranges, such as the
// value of a skip-ports annotation. Empty items are ignored.
func ParsePorts(list string) ([]PortRange, error) {
	var out []PortRange
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		r, err := ParsePortRange(item)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not in 1-65535", s)
	}
	return uint16(n), nil
}
