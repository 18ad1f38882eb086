package iptables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The chains Trellis owns in the nat table.
const (
	InboundChain  = "TRELLIS_INBOUND"
	OutboundChain = "TRELLIS_OUTPUT"
)

// hooks maps each built-in chain Trellis hooks into to the chain it jumps to.
var hooks = []struct{ builtin, chain, comment string }{
	{"PREROUTING", InboundChain, "trellis/inbound"},
	{"OUTPUT", OutboundChain, "trellis/outbound"},
}

// Install programs the interception rules into the nat table (of iptables,
// and of ip6tables when cfg.IPv6 is set). It is idempotent: when the rules
// are already exactly in place it changes nothing; otherwise it rebuilds
// both chains and leaves exactly one jump to each, in one iptables-restore
// transaction per family, so a failure leaves that family untouched. If a
// later family fails, the families already installed by this call are
// cleaned up again, so interception is all or nothing.
//
// With cfg.Mode "auto" the backend is chosen by looking at what is there:
// a backend whose save command fails (missing binary or kernel support) is
// out; of the rest, the one already holding the Trellis chains wins, then
// the one holding more rules in any table; on a tie, nft.
func Install(ctx context.Context, cfg Config, r Runner) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iptables config: %w", err)
	}
	backend, err := resolveBackend(ctx, cfg, r)
	if err != nil {
		return err
	}
	var done []bool
	for _, v6 := range families(cfg) {
		err := installFamily(ctx, cfg, r, backend, v6)
		if err == nil {
			done = append(done, v6)
			continue
		}
		for _, v6 := range done {
			if cerr := cleanupFamily(ctx, r, backend, v6); cerr != nil {
				err = errors.Join(err, fmt.Errorf("rolling back: %w", cerr))
			}
		}
		return err
	}
	return nil
}

// Cleanup removes what Install added: the jumps from PREROUTING and OUTPUT
// to the Trellis chains, and the chains themselves. Nothing else is
// touched. It does nothing, successfully, when nothing is installed.
func Cleanup(ctx context.Context, cfg Config, r Runner) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iptables config: %w", err)
	}
	backend, err := resolveBackend(ctx, cfg, r)
	if err != nil {
		return err
	}
	var errs []error
	for _, v6 := range families(cfg) {
		errs = append(errs, cleanupFamily(ctx, r, backend, v6))
	}
	return errors.Join(errs...)
}

func installFamily(ctx context.Context, cfg Config, r Runner, backend string, v6 bool) error {
	cur, err := saveNAT(ctx, r, backend, v6)
	if err != nil {
		return err
	}
	want := chainRules(cfg, v6)
	upToDate := cur.chains[InboundChain] && cur.chains[OutboundChain] &&
		slices.Equal(slices.Concat(cur.rules[InboundChain], cur.rules[OutboundChain]), want)

	script := []string{"*nat", ":" + InboundChain + " - [0:0]", ":" + OutboundChain + " - [0:0]"}
	var jumps []string
	for _, h := range hooks {
		have := cur.jumps(h.builtin)
		jump := jumpRule(h.builtin, h.chain, h.comment)
		if slices.Equal(have, []string{jump}) {
			continue // keep the jump where it is
		}
		upToDate = false
		for _, rule := range have {
			script = append(script, "-D"+strings.TrimPrefix(rule, "-A"))
		}
		jumps = append(jumps, jump)
	}
	if upToDate {
		return nil
	}
	script = append(script, want...)
	script = append(script, jumps...)
	return restore(ctx, r, backend, v6, append(script, "COMMIT"))
}

func cleanupFamily(ctx context.Context, r Runner, backend string, v6 bool) error {
	cur, err := saveNAT(ctx, r, backend, v6)
	if err != nil {
		return err
	}
	script := []string{"*nat"}
	for _, h := range hooks {
		for _, rule := range cur.jumps(h.builtin) {
			script = append(script, "-D"+strings.TrimPrefix(rule, "-A"))
		}
	}
	for _, chain := range []string{InboundChain, OutboundChain} {
		if cur.chains[chain] {
			script = append(script, "-F "+chain, "-X "+chain)
		}
	}
	if len(script) == 1 {
		return nil // nothing installed
	}
	return restore(ctx, r, backend, v6, append(script, "COMMIT"))
}

// chainRules returns the rules of both Trellis chains for one family, in
// the exact form iptables-save prints them, so they can be compared.
func chainRules(cfg Config, v6 bool) []string {
	var out []string
	add := func(chain, match, comment, target string) {
		out = append(out, fmt.Sprintf("-A %s %s-m comment --comment %q -j %s", chain, match, comment, target))
	}
	for _, s := range cfg.SkipInboundPorts {
		pr, _ := ParsePortRange(s) // validated
		add(InboundChain, "-p tcp -m tcp --dport "+pr.String()+" ", "trellis/skip-inbound-port", "RETURN")
	}
	add(InboundChain, "-p tcp ", "trellis/redirect-inbound", fmt.Sprintf("REDIRECT --to-ports %d", cfg.InboundPort))

	add(OutboundChain, fmt.Sprintf("-m owner --uid-owner %d ", cfg.ProxyUID), "trellis/skip-proxy-uid", "RETURN")
	add(OutboundChain, "-o lo ", "trellis/skip-loopback", "RETURN")
	for _, s := range cfg.SkipOutboundPorts {
		pr, _ := ParsePortRange(s) // validated
		add(OutboundChain, "-p tcp -m tcp --dport "+pr.String()+" ", "trellis/skip-outbound-port", "RETURN")
	}
	for _, s := range cfg.SkipSubnets {
		p, _ := netip.ParsePrefix(strings.TrimSpace(s)) // validated
		if p.Addr().Is6() != v6 {
			continue
		}
		add(OutboundChain, "-d "+p.Masked().String()+" ", "trellis/skip-subnet", "RETURN")
	}
	add(OutboundChain, "-p tcp ", "trellis/redirect-outbound", fmt.Sprintf("REDIRECT --to-ports %d", cfg.OutboundPort))
	return out
}

func jumpRule(builtin, chain, comment string) string {
	return fmt.Sprintf("-A %s -m comment --comment %q -j %s", builtin, comment, chain)
}

// natState is what iptables-save reported for the nat table.
type natState struct {
	chains map[string]bool     // every chain declared
	rules  map[string][]string // chain -> its "-A" lines, in order
}

func parseNAT(save string) natState {
	st := natState{chains: map[string]bool{}, rules: map[string][]string{}}
	inNAT := false
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			inNAT = line == "*nat"
		case !inNAT:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			st.chains[name] = true
		case strings.HasPrefix(line, "-A "):
			fields := strings.Fields(line)
			st.rules[fields[1]] = append(st.rules[fields[1]], line)
		}
	}
	return st
}

// jumps returns the rules of builtin that jump or go to a Trellis chain.
// iptables-save prints the target last, so a suffix test is exact.
func (st natState) jumps(builtin string) []string {
	var out []string
	for _, rule := range st.rules[builtin] {
		for _, chain := range []string{InboundChain, OutboundChain} {
			if strings.HasSuffix(rule, " -j "+chain) || strings.HasSuffix(rule, " -g "+chain) {
				out = append(out, rule)
			}
		}
	}
	return out
}

// families lists the IP families to program: false for IPv4, true for IPv6.
func families(cfg Config) []bool {
	if cfg.IPv6 {
		return []bool{false, true}
	}
	return []bool{false}
}

// tool names an iptables binary, e.g. tool("nft", true, "-save") is
// "ip6tables-nft-save".
func tool(backend string, v6 bool, suffix string) string {
	if v6 {
		return "ip6tables-" + backend + suffix
	}
	return "iptables-" + backend + suffix
}

func saveNAT(ctx context.Context, r Runner, backend string, v6 bool) (natState, error) {
	out, err := run(ctx, r, tool(backend, v6, "-save"), []string{"-t", "nat"}, nil)
	if err != nil {
		return natState{}, err
	}
	return parseNAT(string(out)), nil
}

// restore applies script in one transaction, keeping everything it does
// not mention and waiting for the xtables lock if another writer holds it.
func restore(ctx context.Context, r Runner, backend string, v6 bool, script []string) error {
	input := strings.Join(script, "\n") + "\n"
	_, err := run(ctx, r, tool(backend, v6, "-restore"), []string{"--noflush", "--wait=10"}, []byte(input))
	return err
}
