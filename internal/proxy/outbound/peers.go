package outbound

import (
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// peers is the static table of meshed destinations: which addresses have a
// Trellis proxy in front of them and what identity it must prove. It stands
// in for discovery, and stays as the fallback.
type peers struct {
	byAddr map[string]string // "IP:PORT" or "IP" (any port) -> SPIFFE ID
}

func newPeers(cfg *config.Config) *peers {
	p := &peers{byAddr: map[string]string{}}
	for addr, id := range cfg.EndpointIdentities {
		p.byAddr[addr] = id
	}
	for _, u := range cfg.Upstreams {
		if u.Identity != "" {
			p.byAddr[u.Target] = u.Identity
		}
	}
	return p
}

// Lookup returns the identity of the proxy in front of addr, or "".
func (p *peers) Lookup(addr string) string {
	if id, ok := p.byAddr[addr]; ok {
		return id
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p.byAddr[host]
}
