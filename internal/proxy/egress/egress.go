// Package egress decides, on the outbound proxy, whether traffic to a
// destination outside the mesh (no service, no instance the control plane
// knows) may leave: the EgressNetworks of the workload's namespace and of
// the mesh-wide egress namespace, as the control plane streams them. The
// most specific network covering the destination decides (a workload's
// own namespace before the global one, Deny before Allow); a destination
// none covers may leave. Denied HTTP gets 403 (gRPC PERMISSION_DENIED), a
// denied connection is refused; everything that leaves or is kept in is
// counted by hostname (the Host asked for, or the TLS server name). A
// target given by name is resolved here and pinned to the address decided
// on (Pin), so that a name cannot take traffic around a network.
package egress

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/follow"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Guard holds the egress networks and decides.
type Guard struct {
	// Lookup resolves a target's host name (net.DefaultResolver's
	// LookupNetIP for "ip" unless set before use).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	namespace string
	nets      atomic.Pointer[[]network]
	http, tcp *metrics.Counters
	series    sync.Map // seriesKey -> *atomic.Uint64: no labels built per request
	log       *slog.Logger
}

type seriesKey struct {
	family                *metrics.Counters
	hostname, network, ns string
	allow                 bool
}

type network struct {
	namespace, name string
	allow           bool
	spans           []span // none: every address
}

// span is a CIDR less some of its subnets.
type span struct {
	in     netip.Prefix
	except []netip.Prefix
}

// New returns a guard for a workload of namespace, its counters in reg.
func New(namespace string, reg *metrics.Registry, log *slog.Logger) *Guard {
	return &Guard{namespace: namespace, log: log,
		Lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		http: reg.Counters("outbound_http_egress_total", "Total count of outbound HTTP requests to destinations outside the mesh, by hostname and whether they were let out."),
		tcp:  reg.Counters("outbound_tcp_egress_total", "Total count of outbound connections to destinations outside the mesh, by hostname and whether they were let out."),
	}
}

// decide says whether traffic to addr may leave, and which network decided
// ("" when none covers it).
func (g *Guard) decide(addr netip.Addr) (bool, *network) {
	nets := g.nets.Load()
	if nets == nil {
		return true, nil
	}
	var best *network
	bestBits := -2
	for i := range *nets {
		n := &(*nets)[i]
		bits, ok := n.covers(addr)
		if !ok {
			continue
		}
		switch {
		case bits > bestBits,
			bits == bestBits && n.namespace == g.namespace && best.namespace != g.namespace,
			bits == bestBits && n.namespace == best.namespace && !n.allow:
			best, bestBits = n, bits
		}
	}
	if best == nil {
		return true, nil
	}
	return best.allow, best
}

// covers reports whether n covers addr, and how specifically (the prefix
// length; -1 for a network of every address).
func (n *network) covers(addr netip.Addr) (int, bool) {
	if len(n.spans) == 0 {
		return -1, true
	}
	bits, ok := -1, false
	for _, s := range n.spans {
		if s.in.Contains(addr) && s.in.Bits() > bits && !slices.ContainsFunc(s.except, func(e netip.Prefix) bool { return e.Contains(addr) }) {
			bits, ok = s.in.Bits(), true
		}
	}
	return bits, ok
}

// count counts one request or connection to hostname.
func (g *Guard) count(c *metrics.Counters, hostname string, allow bool, n *network) {
	k := seriesKey{family: c, hostname: hostname, allow: allow}
	if n != nil {
		k.network, k.ns = n.name, n.namespace
	}
	v, ok := g.series.Load(k)
	if !ok {
		result := "allowed"
		if !allow {
			result = "denied"
		}
		v, _ = g.series.LoadOrStore(k, c.With("hostname", hostname, "egress_network", k.network, "egress_namespace", k.ns, "result", result))
	}
	v.(*atomic.Uint64).Add(1)
}

// Pin returns target (host:port) with a host name resolved to the address
// traffic to it must then use, when some network is given by address;
// otherwise, or for an address, target itself. Of several addresses the
// resolver's first is taken (Go orders DNS answers by RFC 6724, usable
// families first, so an IPv6-only host gets an IPv6 one); the dialler's
// fallback to the others is lost, the price of deciding on the address
// that is used (a name resolved again at dial time could have changed).
func (g *Guard) Pin(ctx context.Context, target string) (string, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil || targetAddr(target).IsValid() || !g.byAddress() {
		return target, nil
	}
	addrs, err := g.Lookup(ctx, host)
	if err != nil {
		return "", err
	}
	if len(addrs) == 0 {
		return "", &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	return net.JoinHostPort(addrs[0].Unmap().String(), port), nil
}

// byAddress reports whether some network covers only some addresses.
func (g *Guard) byAddress() bool {
	nets := g.nets.Load()
	return nets != nil && slices.ContainsFunc(*nets, func(n network) bool { return len(n.spans) > 0 })
}

// AllowHTTP lets a request to a destination outside the mesh out, or
// answers it (403) and returns false. The caller pins its target first (Pin).
func (g *Guard) AllowHTTP(w http.ResponseWriter, r *http.Request) bool {
	target := httpproxy.Target(r.Context()) // a forward-proxy request's own
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	allow, n := g.decide(targetAddr(target))
	g.count(g.http, host, allow, n)
	if !allow {
		g.log.Debug("egress denied", "target", target, "host", host, "egress_network", n.namespace+"/"+n.name)
		httpproxy.WriteError(w, r, http.StatusForbidden, "egress to "+host+" denied by EgressNetwork "+n.namespace+"/"+n.name)
	}
	return allow
}

// AllowConn reports whether a connection (opaque TCP, or TLS the proxy
// does not terminate) of m to target, a destination outside the mesh
// pinned by Pin, may leave.
func (g *Guard) AllowConn(m *transport.Meta, target string) bool {
	allow, n := g.decide(targetAddr(target))
	g.count(g.tcp, m.SNI, allow, n)
	if !allow {
		g.log.Debug("egress denied", "target", target, "sni", m.SNI, "egress_network", n.namespace+"/"+n.name)
	}
	return allow
}

// targetAddr is the IP of a host:port target, without an IPv6 zone (no
// prefix contains a zoned address: fe80::1%eth0 is fe80::1 to a network);
// the zero Addr (covered by no network but the every-address ones) when it
// is a name.
func targetAddr(target string) netip.Addr {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().WithZone("").Unmap()
}

// Watch keeps the guard's networks those the control plane streams
// through client, until ctx ends.
func (g *Guard) Watch(ctx context.Context, client policyv1.EgressPoliciesClient) {
	follow.Stream(ctx, g.log, "egress networks", func(ctx context.Context) (func() (*policyv1.EgressPolicy, error), error) {
		stream, err := client.Watch(ctx, &policyv1.WatchEgress{})
		if err != nil {
			return nil, err
		}
		return stream.Recv, nil
	}, func(p *policyv1.EgressPolicy) {
		nets := compile(p)
		g.nets.Store(&nets)
		g.log.Info("egress networks updated", "networks", len(nets))
	})
}

func compile(p *policyv1.EgressPolicy) []network {
	var out []network
	for _, en := range p.GetNetworks() {
		n := network{namespace: en.GetNamespace(), name: en.GetName(), allow: en.GetAllow()}
		for _, nw := range en.GetNetworks() {
			pr, err := netip.ParsePrefix(nw.GetCidr())
			if err != nil {
				continue // validated by the control plane
			}
			sp := span{in: pr.Masked()}
			for _, e := range nw.GetExcept() {
				if q, err := netip.ParsePrefix(e); err == nil {
					sp.except = append(sp.except, q.Masked())
				}
			}
			n.spans = append(n.spans, sp)
		}
		out = append(out, n)
	}
	return out
}
