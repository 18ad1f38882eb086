package iptables

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// resolveBackend turns cfg.Mode into "nft" or "legacy". For "auto" it runs
// each backend's save command for every family in use and picks, in order:
// the only backend whose save works; the one already holding the Trellis
// chains (so Cleanup finds what Install made); the one holding more rules;
// nft.
func resolveBackend(ctx context.Context, cfg Config, r Runner) (string, error) {
	if cfg.Mode != ModeAuto {
		return cfg.Mode, nil
	}
	type probe struct {
		backend string
		ours    bool
		rules   int
		err     error
	}
	probes := []probe{{backend: ModeNFT}, {backend: ModeLegacy}}
	for i := range probes {
		p := &probes[i]
		for _, v6 := range families(cfg) {
			out, err := run(ctx, r, tool(p.backend, v6, "-save"), nil, nil)
			if err != nil {
				p.err = err
				break
			}
			st := parseNAT(string(out))
			p.ours = p.ours || st.chains[InboundChain] || st.chains[OutboundChain]
			p.rules += strings.Count("\n"+string(out), "\n-A ")
		}
	}
	nft, legacy := probes[0], probes[1]
	switch {
	case nft.err != nil && legacy.err != nil:
		return "", fmt.Errorf("mode auto: no usable iptables backend: %w", errors.Join(nft.err, legacy.err))
	case nft.err != nil:
		return ModeLegacy, nil
	case legacy.err != nil:
		return ModeNFT, nil
	case nft.ours != legacy.ours:
		if legacy.ours {
			return ModeLegacy, nil
		}
		return ModeNFT, nil
	case legacy.rules > nft.rules:
		return ModeLegacy, nil
	default:
		return ModeNFT, nil
	}
}
